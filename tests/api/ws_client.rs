//! Test-side tools for the real-time feed: a WebSocket client speaking the contract's frames, a
//! reader of the JetStream stream the relay fills, and a TCP proxy that can cut NATS off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{schema_errors, schema_validator, TestApp, NATS_URL};

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How a connection ended.
#[derive(Debug)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl TestApp {
    pub fn ws_url(&self, token: Option<&str>) -> String {
        let base = self.address.replacen("http://", "ws://", 1);
        match token {
            Some(t) => format!("{base}/ws?token={t}"),
            None => format!("{base}/ws"),
        }
    }

    /// A WebSocket connection authenticated by `token` in the query; waits for `authenticated`.
    pub async fn ws(&self, token: &str) -> WsClient {
        let mut client = self
            .try_ws(token)
            .await
            .unwrap_or_else(|e| panic!("the WebSocket was refused: {e:?}"));
        let hello = client.next().await.expect("a first frame");
        assert_eq!(hello["type"], "authenticated", "{hello}");
        client
    }

    /// Connects; the error is the refusal's HTTP status and body.
    pub async fn try_ws(&self, token: &str) -> Result<WsClient, (u16, Value)> {
        match tokio_tungstenite::connect_async(self.ws_url(Some(token))).await {
            Ok((stream, _)) => Ok(WsClient { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                // A refused upgrade carries the headers the document declares for its status.
                crate::openapi::check_headers(
                    &reqwest::Method::GET,
                    "/ws",
                    resp.status(),
                    resp.headers(),
                );
                let body = resp
                    .body()
                    .as_ref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                Err((resp.status().as_u16(), body))
            }
            Err(e) => panic!("the WebSocket connection failed: {e}"),
        }
    }

    /// A connection that has not authenticated yet.
    pub async fn ws_anonymous(&self) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_url(None))
            .await
            .expect("the WebSocket connection failed");
        WsClient { stream }
    }
}

impl WsClient {
    pub async fn send(&mut self, kind: &str, data: Value, id: Value) {
        let frame = json!({"type": kind, "data": data, "id": id});
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("a frame could not be sent");
    }

    /// The next server frame, or `None` once the connection closed. Fails the test after 60 s.
    pub async fn next(&mut self) -> Option<Value> {
        self.next_within(60)
            .await
            .unwrap_or_else(|| panic!("no frame arrived within 60 s"))
    }

    /// `Some(frame or None-if-closed)`, or `None` when nothing came within `secs`.
    pub async fn next_within(&mut self, secs: u64) -> Option<Option<Value>> {
        self.next_within_ms(secs * 1000).await
    }

    pub async fn next_within_ms(&mut self, ms: u64) -> Option<Option<Value>> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(msg) => msg,
            };
            match msg {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
                    assert_frame(&frame);
                    return Some(Some(frame));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Some(None),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next frame of type `kind`, skipping others.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("the connection closed while waiting for {kind}"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Subscribes and returns the frames that came before the `subscribed` answer (the replay)
    /// and the answer itself.
    pub async fn subscribe(&mut self, data: Value) -> (Vec<Value>, Value) {
        self.send("subscribe", data.clone(), json!("sub")).await;
        let mut replay = Vec::new();
        loop {
            let frame = self
                .next()
                .await
                .expect("the connection closed during the replay");
            match frame["type"].as_str() {
                Some("subscribed") => {
                    assert_eq!(frame["id"], "sub", "{frame}");
                    return (replay, frame);
                }
                Some("error") => panic!("the subscription {data} was refused: {frame}"),
                _ => replay.push(frame),
            }
        }
    }

    /// Reads until the server closes the connection, and returns its close frame.
    pub async fn closed(&mut self, secs: u64) -> Closed {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("the server did not close the connection within {secs} s")
                });
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Closed {
                        code: frame.code.into(),
                        reason: frame.reason.to_string(),
                    }
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    return Closed {
                        code: 0,
                        reason: String::new(),
                    }
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Positions in `frames` (those that carry one).
pub fn positions(frames: &[Value]) -> Vec<i64> {
    frames
        .iter()
        .filter_map(|f| f["data"]["position"].as_i64())
        .collect()
}

/// Every event message in the test's JetStream stream, in stream order: (subject, body).
pub async fn stream_events(app: &TestApp) -> Vec<(String, Value)> {
    stream_messages(app, ".events.").await
}

/// Every message in the test's JetStream stream whose subject contains `part`, in stream order.
pub async fn stream_messages(app: &TestApp, part: &str) -> Vec<(String, Value)> {
    let client = async_nats::connect(NATS_URL)
        .await
        .unwrap_or_else(|e| panic!("NATS must be running on {NATS_URL} for the tests ({e})"));
    let js = async_nats::jetstream::new(client);
    let Ok(mut stream) = js.get_stream(&app.env.nats_stream).await else {
        return Vec::new();
    };
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            if msg.subject.as_str().contains(part) {
                out.push((
                    msg.subject.to_string(),
                    serde_json::from_slice(&msg.payload).expect("a JSON message"),
                ));
            }
        }
    }
    out
}

/// A TCP proxy to NATS that a test can cut (connections dropped, new ones refused) and restore.
pub struct NatsProxy {
    pub url: String,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    _accept: tokio::task::JoinHandle<()>,
}

impl NatsProxy {
    pub async fn start() -> NatsProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let url = format!("nats://{}", listener.local_addr().expect("an address"));
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = {
            let up = up.clone();
            let conns = conns.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        let target = NATS_URL.trim_start_matches("nats://");
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().expect("the proxy's list").push(task);
                }
            })
        };
        NatsProxy {
            url,
            up,
            conns,
            _accept: accept,
        }
    }

    /// NATS becomes unreachable: open connections are cut and new ones refused.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.conns.lock().expect("the proxy's list").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A WebSocket client that never answers anything by itself (no automatic pongs): a silent or
/// slow client, as far as the server can tell. It reads frames only when asked.
pub struct RawWs {
    tcp: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the server sent it.
#[derive(Debug)]
pub enum RawFrame {
    Text(String),
    Close(u16, String),
    Other,
}

impl RawWs {
    /// Connects to `/ws?token=`.
    pub async fn connect(app: &TestApp, token: &str) -> RawWs {
        RawWs::open(app, &format!("/ws?token={token}")).await
    }

    /// Connects to `/ws` without a token (the first frame must be `auth`).
    pub async fn anonymous(app: &TestApp) -> RawWs {
        RawWs::open(app, "/ws").await
    }

    async fn open(app: &TestApp, path: &str) -> RawWs {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr: std::net::SocketAddr = app
            .address
            .trim_start_matches("http://")
            .parse()
            .expect("a socket address");
        let mut tcp = TcpStream::connect(addr).await.expect("a TCP connection");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes())
            .await
            .expect("the handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = tcp.read(&mut chunk).await.expect("the handshake answer");
            assert!(n > 0, "the server closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        RawWs {
            tcp,
            buf: buf[end..].to_vec(),
        }
    }

    /// Sends a text frame (masked, as a client must).
    pub async fn send(&mut self, frame: &Value) {
        use tokio::io::AsyncWriteExt;
        let payload = frame.to_string().into_bytes();
        let mut out = vec![0x81u8];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        // A zero mask leaves the payload as it is.
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&payload);
        self.tcp
            .write_all(&out)
            .await
            .expect("a frame could not be sent");
    }

    /// Sends bytes as they are: a frame's header alone, fragments, anything.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.tcp
            .write_all(bytes)
            .await
            .expect("bytes could not be sent");
    }

    /// A masked client frame (zero mask: the payload as it is) with `fin` and `opcode`.
    pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    async fn fill(&mut self, need: usize) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 65536];
        while self.buf.len() < need {
            match self.tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// The next frame; `None` when the connection ended without one.
    pub async fn next(&mut self) -> Option<RawFrame> {
        if !self.fill(2).await {
            return None;
        }
        let opcode = self.buf[0] & 0x0f;
        let (len, header) = match self.buf[1] & 0x7f {
            126 => {
                if !self.fill(4).await {
                    return None;
                }
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                if !self.fill(10).await {
                    return None;
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(b) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if !self.fill(header + len).await {
            return None;
        }
        let payload: Vec<u8> = self.buf[header..header + len].to_vec();
        self.buf.drain(..header + len);
        Some(match opcode {
            1 => RawFrame::Text(String::from_utf8_lossy(&payload).to_string()),
            8 => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    0
                };
                RawFrame::Close(
                    code,
                    String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).to_string(),
                )
            }
            _ => RawFrame::Other,
        })
    }
}

/// Fails the test unless `instance` matches `schemas/feed/<name>.json`.
pub fn assert_schema(name: &str, instance: &Value) {
    let errors = schema_errors(&validator(name), instance);
    assert!(
        errors.is_empty(),
        "{instance} does not match {name}.json: {errors:?}"
    );
}

fn validator(name: &str) -> Arc<jsonschema::Validator> {
    schema_validator(&format!("schemas/feed/{name}.json"), || {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("schemas/feed")
            .join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} could not be read: {e}", path.display()));
        serde_json::from_str(&text).expect("a JSON schema")
    })
}

/// Checks a server frame, and its data where the frame type has a schema of its own.
pub fn assert_frame(frame: &Value) {
    assert_schema("server-frame", frame);
    match frame["type"].as_str() {
        Some("vm-status") if frame["data"]["position"].is_i64() => {
            assert_schema("feed-event", &frame["data"])
        }
        Some("job-update") => assert_schema("job-update", &frame["data"]),
        Some("image-event") => assert_schema("feed-event", &frame["data"]),
        _ => {}
    }
}
