//! The graphical console through the real test guest under TCG: an RFB 3.8 handshake as a
//! client (security None, shared ClientInit, ServerInit) and a full framebuffer update, through
//! `/api/v1/vms/{id}/vnc` (binary frames, subprotocol `binary`) and through the feed's
//! `vnc-connect`/`vnc-data` frames; `vnc-input` is refused until the handshake is done.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Terminal;
use crate::console::{console_events, running_guest, try_console, Socket};
use crate::helpers::spawn_app;
use crate::ws_client::WsClient;

/// Where RFB bytes travel: a `/vnc` socket, `vnc-data` frames on the feed, or a plain TCP
/// connection (to `voidvm vm vnc`, as a VNC viewer makes).
enum Transport {
    Direct(Socket),
    Feed(WsClient, String),
    Tcp(tokio::net::TcpStream),
}

struct Rfb {
    transport: Transport,
    buffer: VecDeque<u8>,
}

impl Rfb {
    async fn send(&mut self, bytes: &[u8]) {
        match &mut self.transport {
            Transport::Direct(socket) => socket
                .send(Message::binary(bytes.to_vec()))
                .await
                .expect("sent"),
            Transport::Feed(ws, vm_id) => {
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                ws.send(
                    "vnc-data",
                    json!({"vmId": vm_id, "data": data}),
                    json!(null),
                )
                .await
            }
            Transport::Tcp(tcp) => tcp.write_all(bytes).await.expect("sent"),
        }
    }

    async fn fill(&mut self) {
        match &mut self.transport {
            Transport::Direct(socket) => loop {
                let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
                    .await
                    .expect("RFB bytes in time");
                match frame {
                    Some(Ok(Message::Binary(bytes))) => {
                        self.buffer.extend(bytes.iter());
                        return;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("the VNC socket ended: {other:?}"),
                }
            },
            Transport::Feed(ws, _) => {
                let frame = ws.next_of("vnc-data").await;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(frame["data"]["data"].as_str().expect("base64"))
                    .expect("valid base64");
                self.buffer.extend(bytes);
            }
            Transport::Tcp(tcp) => {
                let mut buf = [0u8; 16 * 1024];
                let n = tokio::time::timeout(Duration::from_secs(60), tcp.read(&mut buf))
                    .await
                    .expect("RFB bytes in time")
                    .expect("the connection reads");
                assert!(n > 0, "the CLI closed the viewer's connection");
                self.buffer.extend(&buf[..n]);
            }
        }
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buffer.len() < n {
            self.fill().await;
        }
        self.buffer.drain(..n).collect()
    }

    async fn u16(&mut self) -> u16 {
        let b = self.read(2).await;
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The client's side of an RFB 3.8 handshake with security None; returns the framebuffer's
    /// width and height.
    async fn handshake(&mut self) -> (u16, u16) {
        let version = self.read(12).await;
        assert_eq!(
            version,
            b"RFB 003.008\n",
            "{:?}",
            String::from_utf8_lossy(&version)
        );
        self.send(b"RFB 003.008\n").await;
        let count = self.read(1).await[0];
        let types = self.read(usize::from(count)).await;
        assert!(types.contains(&1), "security None is offered: {types:?}");
        self.send(&[1]).await;
        assert_eq!(self.read(4).await, [0, 0, 0, 0], "SecurityResult OK");
        self.send(&[1]).await; // ClientInit, shared
        let width = self.u16().await;
        let height = self.u16().await;
        let _pixel_format = self.read(16).await;
        let name_len = u32::from_be_bytes(self.read(4).await.try_into().expect("4 bytes"));
        let _name = self.read(name_len as usize).await;
        assert!(width > 0 && height > 0, "{width}x{height}");
        (width, height)
    }

    /// A full, non-incremental update of the whole screen: the FramebufferUpdate header.
    async fn full_update(&mut self, width: u16, height: u16) -> u16 {
        let [w1, w2] = width.to_be_bytes();
        let [h1, h2] = height.to_be_bytes();
        self.send(&[3, 0, 0, 0, 0, 0, w1, w2, h1, h2]).await;
        let header = self.read(4).await;
        assert_eq!(header[0], 0, "a FramebufferUpdate: {header:?}");
        u16::from_be_bytes([header[2], header[3]])
    }
}

#[tokio::test]
async fn an_rfb_client_gets_the_framebuffer_through_vnc_and_through_the_feed() {
    let app = spawn_app().await;
    let id = running_guest(&app, "vnc").await;

    let (socket, protocol) = try_console(&app, &id, "vnc", &app.token, Some("binary"))
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}"));
    assert_eq!(
        protocol.as_deref(),
        Some("binary"),
        "the subprotocol is answered"
    );
    let mut direct = Rfb {
        transport: Transport::Direct(socket),
        buffer: VecDeque::new(),
    };
    let (width, height) = direct.handshake().await;
    assert!(
        direct.full_update(width, height).await >= 1,
        "at least one rectangle"
    );

    let mut ws = app.ws(&app.token).await;
    ws.send("vnc-connect", json!({"vmId": id}), json!("v1"))
        .await;
    let connected = ws.next_of("vnc-connected").await;
    assert_eq!(connected["id"], "v1", "{connected}");
    // Input before the client's handshake would break the RFB stream: refused.
    ws.send(
        "vnc-input",
        json!({"vmId": id, "inputType": "mouse", "x": 1, "y": 1, "buttons": 0}),
        json!("early"),
    )
    .await;
    // QEMU's greeting may come first: its bytes are kept for the handshake.
    let mut early = VecDeque::new();
    let refused = loop {
        let frame = ws.next().await.expect("a frame");
        match frame["type"].as_str() {
            Some("vnc-data") => early.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(frame["data"]["data"].as_str().expect("base64"))
                    .expect("valid base64"),
            ),
            Some("error") => break frame,
            _ => {}
        }
    };
    assert_eq!(refused["data"]["code"], "CONSOLE_NOT_READY", "{refused}");
    assert_eq!(refused["id"], "early", "{refused}");
    let mut feed = Rfb {
        transport: Transport::Feed(ws, id.clone()),
        buffer: early,
    };
    let (w, h) = feed.handshake().await;
    assert_eq!((w, h), (width, height), "the same screen");
    assert!(feed.full_update(w, h).await >= 1, "at least one rectangle");
    let Transport::Feed(mut ws, _) = feed.transport else {
        unreachable!("a feed transport")
    };
    // Between whole messages, input goes in as RFB events.
    for input in [
        json!({"vmId": id, "inputType": "mouse", "x": 10, "y": 10, "buttons": 1}),
        json!({"vmId": id, "inputType": "keyboard", "key": "a", "down": true}),
        json!({"vmId": id, "inputType": "keyboard", "key": "a", "down": false}),
    ] {
        ws.send("vnc-input", input, json!("in")).await;
    }
    ws.send("vnc-disconnect", json!({"vmId": id}), json!("bye"))
        .await;
    loop {
        let frame = ws.next().await.expect("a frame");
        assert_ne!(frame["type"], "error", "{frame}");
        if frame["type"] == "vnc-disconnected" {
            assert_eq!(frame["id"], "bye", "{frame}");
            break;
        }
    }
    ws.close().await;
    if let Transport::Direct(mut socket) = direct.transport {
        socket.close(None).await.expect("closed");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = console_events(&app, &id).await;
        if events.len() == 4 {
            assert!(
                events.iter().all(|e| e["data"]["console"] == "vnc"),
                "{events:?}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[tokio::test]
async fn the_cli_serves_the_graphical_console_to_a_vnc_viewer_on_a_local_port() {
    let app = spawn_app().await;
    let id = running_guest(&app, "cli-vnc").await;
    let term = Terminal::new(&app);
    term.login().await;

    let missing = term.run(&["vm", "vnc", "vm-doesnotexist"]).await;
    assert_eq!(missing.code, 4, "no such VM: {}", missing.stderr);

    let mut cli = term.spawn(&["vm", "vnc", "cli-vnc", "--once"]);
    let stdout = cli.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the address in time")
    .expect("stdout reads")
    .expect("the address on stdout");
    let addr: std::net::SocketAddr = line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(addr.ip().is_loopback(), "{addr}");

    let viewer = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connected");
    let mut rfb = Rfb {
        transport: Transport::Tcp(viewer),
        buffer: VecDeque::new(),
    };
    let (width, height) = rfb.handshake().await;
    let rects = rfb.full_update(width, height).await;
    assert!(rects > 0, "a full update has rectangles");

    // The viewer leaves; with --once, so does the CLI.
    drop(rfb);
    let status = tokio::time::timeout(Duration::from_secs(20), cli.wait())
        .await
        .expect("the CLI ends once the viewer left")
        .expect("the CLI ran");
    let mut stderr = String::new();
    cli.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .await
        .expect("stderr reads");
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("The viewer left."), "{stderr}");
    assert!(stderr.contains(&id), "{stderr}");
}
