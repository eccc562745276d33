//! The closing handshake of `/ws` (RFC 6455 §5.5.1): a client's close frame is answered with a
//! close frame of the same code, before and after authentication, and a binary message where the
//! auth frame belongs gets an error frame and close 1008 instead of silence. (The consoles answer
//! a close the same way; the SDKs' console tests check it against a running guest.)

use serde_json::Value;

use crate::helpers::spawn_app;
use crate::ws_client::{RawFrame, RawWs};

/// A close frame's payload: the code, then the reason.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The server's close frame, skipping what came before it.
async fn close_answer(ws: &mut RawWs) -> (u16, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        match ws.next().await {
            Some(RawFrame::Close(code, _)) => return (code, before),
            Some(RawFrame::Text(text)) => before.push(serde_json::from_str(&text).expect("JSON")),
            Some(RawFrame::Other) => {}
            None => panic!("the connection ended without a close frame; before it: {before:?}"),
        }
    }
}

#[actix_rt::test]
async fn a_clients_close_frame_is_answered_with_the_same_code() {
    let app = spawn_app().await;
    let mut ws = RawWs::connect(&app, &app.token).await;
    ws.send_raw(&RawWs::frame(true, 8, &close_payload(1000, "bye")))
        .await;
    let (code, _) = close_answer(&mut ws).await;
    assert_eq!(code, 1000);

    let mut ws = RawWs::connect(&app, &app.token).await;
    ws.send_raw(&RawWs::frame(true, 8, &close_payload(4001, "going")))
        .await;
    let (code, _) = close_answer(&mut ws).await;
    assert_eq!(code, 4001);

    // Before any auth frame, too.
    let mut ws = RawWs::anonymous(&app).await;
    ws.send_raw(&RawWs::frame(true, 8, &close_payload(1001, "")))
        .await;
    let (code, before) = close_answer(&mut ws).await;
    assert_eq!(code, 1001, "{before:?}");
}

#[actix_rt::test]
async fn a_binary_message_where_the_auth_frame_belongs_is_refused() {
    let app = spawn_app().await;
    let mut ws = RawWs::anonymous(&app).await;
    ws.send_raw(&RawWs::frame(true, 2, b"\x00\x01binary")).await;
    let (code, before) = close_answer(&mut ws).await;
    assert_eq!(code, 1008, "{before:?}");
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0]["type"], "error", "{before:?}");
    assert_eq!(before[0]["data"]["code"], "UNAUTHORIZED", "{before:?}");
}
