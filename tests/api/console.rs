//! The serial console over `/api/v1/vms/{id}/console`, through the real test guest under TCG: a
//! command typed over the WebSocket runs in the guest's shell, every viewer sees its output, a
//! viewer that comes later first gets the earlier output, and each session is in the VM's log as
//! `ConsoleOpened`/`ConsoleClosed` with the user. Refusals (401, 403, 404, 409) come before the
//! upgrade, in the error envelope.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{eventually, spawn_app, TestApp};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The command typed: its echo holds `hel""lo`, so `hello-42` can only be the shell's output.
pub const COMMAND: &str = "echo hel\"\"lo-$((6*7))\n";
pub const OUTPUT: &str = "hello-42";

/// Connects to a console WebSocket (`console` or `vnc`) of `vm_id` with `token` in the query and
/// `protocol` as `Sec-WebSocket-Protocol`; the error is the refusal's status and body.
pub async fn try_console(
    app: &TestApp,
    vm_id: &str,
    which: &str,
    token: &str,
    protocol: Option<&str>,
) -> Result<(Socket, Option<String>), (u16, Value)> {
    let base = app.address.replacen("http://", "ws://", 1);
    let mut request = format!("{base}/api/v1/vms/{vm_id}/{which}?token={token}")
        .into_client_request()
        .expect("a request");
    if let Some(protocol) = protocol {
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocol.parse().expect("a header value"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let chosen = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            Ok((socket, chosen))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("the console connection failed: {e}"),
    }
}

/// The status and body a console request was refused with.
async fn refusal(app: &TestApp, vm_id: &str, which: &str, token: &str) -> (u16, Value) {
    match try_console(app, vm_id, which, token, None).await {
        Ok(_) => panic!("the {which} of {vm_id} was not refused"),
        Err(refused) => refused,
    }
}

pub async fn console(app: &TestApp, vm_id: &str, token: &str) -> Socket {
    try_console(app, vm_id, "console", token, None)
        .await
        .unwrap_or_else(|e| panic!("the console was refused: {e:?}"))
        .0
}

/// Reads binary frames until their bytes hold `want`; returns everything read. Fails after 60 s.
pub async fn read_until(socket: &mut Socket, want: &str) -> String {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(&got).contains(want) {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => got.extend_from_slice(&bytes),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!(
                "waiting for {want:?}: {other:?}; so far {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

/// Boots the test guest and waits until its shell is about to start.
pub async fn running_guest(app: &TestApp, name: &str) -> String {
    let id = app.create_guest(name).await;
    app.act_and_wait(&id, "start", None).await;
    eventually(120, "the guest is ready", || {
        app.serial_log(&id).contains("VOIDVM-GUEST-READY")
    })
    .await;
    id
}

/// Types [`COMMAND`] on `socket` until `OUTPUT` comes back (the shell may not read yet).
async fn run_command(socket: &mut Socket) -> String {
    for _ in 0..12 {
        socket
            .send(Message::binary(COMMAND.as_bytes().to_vec()))
            .await
            .expect("typed");
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(frame) = tokio::time::timeout_at(deadline, socket.next()).await {
            match frame {
                Some(Ok(Message::Binary(bytes))) => got.extend_from_slice(&bytes),
                Some(Ok(_)) => {}
                other => panic!("the console ended: {other:?}"),
            }
            if String::from_utf8_lossy(&got).contains(OUTPUT) {
                return String::from_utf8_lossy(&got).to_string();
            }
        }
    }
    panic!("the shell never answered {COMMAND:?}");
}

/// The VM's console events once there are at least `n` (fails after 30 s).
async fn await_console_events(app: &TestApp, vm_id: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = console_events(app, vm_id).await;
        if events.len() >= n {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} console events were not recorded: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn console_events(app: &TestApp, vm_id: &str) -> Vec<Value> {
    let (status, page) = app.vm_events(vm_id, "?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("Console")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_command_typed_on_the_console_runs_and_every_viewer_sees_its_output() {
    let app = spawn_app().await;
    let id = running_guest(&app, "console").await;
    // A request that is not a WebSocket upgrade is refused, and opens nothing.
    for which in ["console", "vnc"] {
        let (status, body) = app
            .call(Method::GET, &format!("/api/v1/vms/{id}/{which}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["field"], "upgrade", "{body}");
    }

    let mut first = console(&app, &id, &app.token).await;
    let mut second = console(&app, &id, &app.token).await;
    let typed = run_command(&mut first).await;
    assert!(
        typed.contains("hel\"\"lo"),
        "the echo of the typing: {typed}"
    );
    read_until(&mut second, OUTPUT).await;

    // A viewer that comes later first gets the earlier output.
    let mut later = console(&app, &id, &app.token).await;
    read_until(&mut later, OUTPUT).await;

    for socket in [first, second, later] {
        let mut socket = socket;
        socket.close(None).await.expect("closed");
    }
    let events = await_console_events(&app, &id, 6).await;
    assert_eq!(events.len(), 6, "{events:?}");
    let (me_status, me) = app.me().await;
    assert_eq!(me_status, StatusCode::OK);
    for event in &events {
        assert_eq!(event["data"]["console"], "serial", "{event}");
        assert_eq!(event["actor"]["id"], me["data"]["id"], "{event}");
        assert_eq!(event["actor"]["name"], "admin", "{event}");
    }
    let sessions = |kind: &str| {
        let mut ids: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| {
                e["data"]["sessionId"]
                    .as_str()
                    .expect("a session")
                    .to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(sessions("ConsoleOpened"), sessions("ConsoleClosed"));
    assert_eq!(
        app.status_of(&id).await,
        "running",
        "a console changes no status"
    );
    // The VM's history reads through them: running at each.
    for event in &events {
        let at = event["sequence"].as_i64().expect("a sequence").to_string();
        let (status, body) = app.history(&id, &at).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            body["data"]["state"]["status"], "running",
            "at {at}: {body}"
        );
    }
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[tokio::test]
async fn a_dropped_connection_and_a_stopped_machine_end_their_sessions() {
    let app = spawn_app().await;
    let id = running_guest(&app, "dropped").await;
    let socket = console(&app, &id, &app.token).await;
    drop(socket);
    let events = await_console_events(&app, &id, 2).await;
    assert_eq!(events[0]["type"], "ConsoleOpened", "{events:?}");
    assert_eq!(events[1]["type"], "ConsoleClosed", "{events:?}");
    assert_eq!(
        events[0]["data"]["sessionId"],
        events[1]["data"]["sessionId"]
    );
    // A viewer whose role changes is closed (1008): it was admitted under the old one.
    let (status, frank) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "frank", "password": "password1", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{frank}");
    let token = app.login_token("frank", "password1").await;
    let mut demoted = console(&app, &id, &token).await;
    let (status, body) = app
        .call(
            Method::PUT,
            &format!(
                "/api/v1/users/{}",
                frank["data"]["id"].as_str().expect("an id")
            ),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let close = loop {
        match tokio::time::timeout_at(deadline, demoted.next())
            .await
            .expect("closed within 30 s")
        {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(close.code), 1008, "{close:?}");
    assert!(close.reason.contains("role changed"), "{close:?}");
    assert_eq!(await_console_events(&app, &id, 4).await.len(), 4);

    // A viewer still there when the machine stops is closed normally, and that is recorded.
    let mut staying = console(&app, &id, &app.token).await;
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let close = loop {
        match tokio::time::timeout_at(deadline, staying.next())
            .await
            .expect("closed within 30 s")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    let close = close.expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1000, "{close:?}");
    assert_eq!(await_console_events(&app, &id, 6).await.len(), 6);
}

#[actix_rt::test]
async fn a_console_is_refused_before_the_upgrade() {
    let app = spawn_app().await;
    let id = app.create_guest("refusals").await;
    for (which, frame) in [("console", "terminal-connect"), ("vnc", "vnc-connect")] {
        // No token.
        let (status, body) = refusal(&app, &id, which, "").await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("UNAUTHORIZED")),
            "{body}"
        );
        // A viewer may read VMs but not open their consoles.
        let (status, created) = app
            .call(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": format!("watcher-{which}"), "password": "password1", "role": "viewer"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let viewer = app
            .login_token(&format!("watcher-{which}"), "password1")
            .await;
        let (status, body) = refusal(&app, &id, which, &viewer).await;
        assert_eq!(status, 403, "{body}");
        assert!(
            body["error"]["details"]
                .as_str()
                .unwrap_or_default()
                .contains("vm:console"),
            "{body}"
        );
        // Another user's VM does not exist for them.
        let other = app.create_user(&format!("other-{which}")).await;
        let (status, body) = refusal(&app, &id, which, &other).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("VM_NOT_FOUND")),
            "{body}"
        );
        // A stopped VM has no console.
        let (status, body) = refusal(&app, &id, which, &app.token).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("VM_NOT_RUNNING")),
            "{body}"
        );
        // The same refusals as error frames on the feed.
        for (token, code) in [
            (&viewer, "FORBIDDEN"),
            (&other, "VM_NOT_FOUND"),
            (&app.token, "VM_NOT_RUNNING"),
        ] {
            let mut ws = app.ws(token).await;
            ws.send(frame, json!({"vmId": id}), json!("c")).await;
            let refused = ws.next_of("error").await;
            assert_eq!(
                (refused["data"]["code"].as_str(), &refused["id"]),
                (Some(code), &json!("c")),
                "{refused}"
            );
            ws.close().await;
        }
    }
    // The same answer to a plain GET, which the OpenAPI checker reads.
    let (status, body) = app
        .call(Method::GET, &format!("/api/v1/vms/{id}/console"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        console_events(&app, &id).await.is_empty(),
        "nothing was recorded"
    );
}

/// The `terminal-output` text of frames until it holds `want`.
async fn terminal_until(ws: &mut crate::ws_client::WsClient, want: &str) -> String {
    let mut text = String::new();
    while !text.contains(want) {
        let frame = ws.next_of("terminal-output").await;
        text.push_str(frame["data"]["data"].as_str().expect("text"));
    }
    text
}

#[tokio::test]
async fn the_feeds_terminal_frames_type_and_read_the_serial_console() {
    let app = spawn_app().await;
    let id = running_guest(&app, "terminal").await;
    let mut ws = app.ws(&app.token).await;

    // Input before the terminal is open is refused, naming the VM.
    ws.send(
        "terminal-input",
        json!({"vmId": id, "data": "ls\n"}),
        json!("early"),
    )
    .await;
    let refused = ws.next_of("error").await;
    assert_eq!(refused["data"]["field"], "data.vmId", "{refused}");

    ws.send("terminal-connect", json!({"vmId": id}), json!("t1"))
        .await;
    let connected = ws.next_of("terminal-connected").await;
    assert_eq!(connected["id"], "t1", "{connected}");
    assert!(connected["data"]["sessionId"]
        .as_str()
        .is_some_and(|s| s.starts_with("con-")));

    ws.send(
        "terminal-resize",
        json!({"vmId": id, "cols": 120, "rows": 40}),
        json!("r1"),
    )
    .await;
    let resized = ws.next_of("terminal-resized").await;
    assert_eq!(
        (
            resized["data"]["cols"].as_u64(),
            resized["data"]["applied"].as_bool()
        ),
        (Some(120), Some(false)),
        "{resized}"
    );
    ws.send(
        "terminal-resize",
        json!({"cols": 0, "rows": 40}),
        json!("r2"),
    )
    .await;
    assert_eq!(ws.next_of("error").await["data"]["field"], "data.cols");

    let mut text = String::new();
    for _ in 0..12 {
        ws.send(
            "terminal-input",
            json!({"vmId": id, "data": COMMAND}),
            json!(null),
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Some(Some(frame)) = ws
            .next_within_ms(
                deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .as_millis() as u64,
            )
            .await
        {
            if frame["type"] == "terminal-output" {
                text.push_str(frame["data"]["data"].as_str().expect("text"));
            }
            if text.contains(OUTPUT) {
                break;
            }
        }
        if text.contains(OUTPUT) {
            break;
        }
    }
    assert!(text.contains(OUTPUT), "the shell never answered: {text}");

    // A second connection attached later sees the earlier output first.
    let mut later = app.ws(&app.token).await;
    later
        .send("terminal-connect", json!({"vmId": id}), json!("t2"))
        .await;
    terminal_until(&mut later, OUTPUT).await;

    ws.send("terminal-disconnect", json!({"vmId": id}), json!("d1"))
        .await;
    let gone = ws.next_of("terminal-disconnected").await;
    assert_eq!(gone["id"], "d1", "{gone}");
    // The machine stopping ends the other connection's terminal, unasked, and records it.
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    let ended = later.next_of("terminal-disconnected").await;
    assert_eq!(ended["data"]["vmId"], json!(id), "{ended}");
    assert!(
        ended["data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("stopped")),
        "{ended}"
    );
    let events = await_console_events(&app, &id, 4).await;
    assert_eq!(events.len(), 4, "{events:?}");
    later.close().await;
}
