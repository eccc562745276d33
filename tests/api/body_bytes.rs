//! The bytes a client sends reach the API as sent: a body that follows an interim
//! `100 Continue` (curl sends `Expect: 100-continue` for any larger upload) and WebSocket frames
//! after the upgrade are not taken for a request head by the head guard (`api::head_guard`); and
//! a compressed body is refused before anything inflates it.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};
use crate::ws_client::{RawFrame, RawWs};

/// Sends `head`, waits for the interim `100 Continue`, sends `body`; the final answer's status and
/// JSON body (the request asks the server to close the connection after it).
async fn with_expect_continue(app: &TestApp, head: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("a connection");
    socket.write_all(head.as_bytes()).await.expect("the head");
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = socket.read(&mut byte).await.expect("the interim answer");
        assert!(n == 1, "closed before 100 Continue: {interim:?}");
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100 "), "{interim:?}");
    socket.write_all(body).await.expect("the body");
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("the answer");
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    (
        status.expect("a status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[actix_rt::test]
async fn a_body_sent_after_100_continue_is_read_as_sent() {
    let app = spawn_app().await;
    let id = app.create_blank("continued").await;
    // One line of 62,000 bytes: longer than any head line may be, well within a body's limit.
    let body = format!(
        "{{\"description\": \"sent after 100 Continue\"{}}}",
        " ".repeat(62_000)
    );
    let head = format!(
        "PATCH /api/v1/vms/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\
         Connection: close\r\n\r\n",
        app.token,
        body.len()
    );
    let (status, answer) = with_expect_continue(&app, &head, body.as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let (_, vm) = app.get_vm(&id).await;
    assert_eq!(vm["data"]["description"], "sent after 100 Continue", "{vm}");
}

#[actix_rt::test]
async fn a_websocket_frame_just_under_the_limit_arrives_whole() {
    let app = spawn_app().await;
    let mut ws = RawWs::connect(&app, &app.token).await;
    for size in [61_500, 63_000, 65_000] {
        let id = "i".repeat(size);
        ws.send(&json!({"type": "ping", "id": id})).await;
        let pong = loop {
            match ws.next().await {
                Some(RawFrame::Text(text)) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON");
                    if frame["type"] == "pong" || frame["type"] == "error" {
                        break frame;
                    }
                }
                Some(RawFrame::Other) => {}
                other => panic!("no answer to a ping of {size}: {other:?}"),
            }
        };
        assert_eq!(pong["type"], "pong", "{size}: {}", &pong.to_string()[..200]);
        assert!(
            pong["id"] == id.as_str(),
            "{size}: the id came back changed"
        );
    }
}

#[actix_rt::test]
async fn a_compressed_body_is_refused_naming_content_encoding() {
    let app = spawn_app().await;
    for (path, token) in [
        ("/api/v1/auth/login", None),
        ("/api/v1/vms", Some(app.token.clone())),
    ] {
        let mut req = app
            .client
            .post(app.url(path))
            .header("Content-Type", "application/json")
            .header("Content-Encoding", "gzip")
            .body(vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 0x03]);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.expect("the request");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let body: Value = resp.json().await.expect("an envelope");
        assert_eq!(body["error"]["field"], "Content-Encoding", "{path}: {body}");
    }
}
