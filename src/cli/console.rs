//! `voidvm vm console VM`: the VM's serial console in this terminal, over
//! `/api/v1/vms/{id}/console` (as `virsh console` does for libvirt). On a terminal, stdin is put
//! in raw mode (restored on the way out) and `Ctrl-]` ends the session. From a pipe, what stdin
//! holds is typed, and the session ends once stdin has ended and the guest has been quiet for
//! [`LINGER`], so `echo 'uname -a' | voidvm vm console web` prints the answer.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::client::{CliError, CliResult, Client};

/// `Ctrl-]`, the byte that ends a session typed on a terminal.
const ESCAPE: u8 = 0x1d;
/// After stdin ended (a pipe), how long the guest must be quiet before the session ends.
const LINGER: Duration = Duration::from_secs(2);

pub async fn run(client: &Client, vm: &str) -> CliResult<()> {
    let id = super::vm::resolve(client, vm).await?;
    let token = client.require_token()?;
    let ws = connect(client.origin(), &id, token, Console::Serial).await?;
    let terminal = std::io::stdin().is_terminal();
    let _raw = if terminal {
        eprintln!("Connected to the serial console of {id}; Ctrl-] ends the session.");
        Some(RawMode::enter()?)
    } else {
        None
    };
    let (mut sink, mut stream) = ws.split();
    let mut stdin = tokio::io::stdin();
    let mut stdout = std::io::stdout();
    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    loop {
        let linger = async {
            if stdin_open {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(LINGER).await;
        };
        tokio::select! {
            read = stdin.read(&mut buf), if stdin_open => {
                let n = read.unwrap_or(0);
                if n == 0 {
                    stdin_open = false;
                    continue;
                }
                let chunk = &buf[..n];
                let (typed, end) = match chunk.iter().position(|b| terminal && *b == ESCAPE) {
                    Some(at) => (&chunk[..at], true),
                    None => (chunk, false),
                };
                if !typed.is_empty() && sink.send(Message::binary(typed.to_vec())).await.is_err() {
                    break;
                }
                if end {
                    break;
                }
            }
            message = stream.next() => match message {
                Some(Ok(Message::Binary(bytes))) => write_out(&mut stdout, &bytes)?,
                Some(Ok(Message::Text(text))) => write_out(&mut stdout, text.as_bytes())?,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    if terminal {
                        eprint!("\r\n");
                    }
                    eprintln!("The console of {id} closed.");
                    return Ok(());
                }
                Some(Ok(_)) => {}
            },
            () = linger => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(())
}

fn write_out(stdout: &mut std::io::Stdout, bytes: &[u8]) -> CliResult<()> {
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|_| CliError::StdoutClosed)
}

pub(super) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Which of a VM's consoles to open.
#[derive(Debug, Clone, Copy)]
pub(super) enum Console {
    /// `/console`: the serial console.
    Serial,
    /// `/vnc`, subprotocol `binary`: the graphical console's RFB bytes.
    Vnc,
}

/// Opens a console socket; a refusal before the upgrade becomes the API's error (403, 404,
/// 409 for a VM that is not running).
pub(super) async fn connect(
    origin: &str,
    id: &str,
    token: &str,
    console: Console,
) -> CliResult<Socket> {
    let ws_origin = match origin.strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => origin.to_string(),
    };
    let path = match console {
        Console::Serial => "console",
        Console::Vnc => "vnc",
    };
    let url = format!("{ws_origin}/api/v1/vms/{id}/{path}");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| CliError::Usage(format!("{url} is not a WebSocket URL: {e}")))?;
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| CliError::Usage("the token cannot be sent in a header".into()))?;
    request.headers_mut().insert(AUTHORIZATION, bearer);
    if let Console::Vnc = console {
        request.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            tokio_tungstenite::tungstenite::http::HeaderValue::from_static("binary"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body: Value = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err(CliError::from_answer(status, &body))
        }
        Err(e) => Err(CliError::Unreachable {
            url,
            reason: e.to_string(),
        }),
    }
}

/// The terminal in raw mode (keys go to the guest as typed, no local echo) until dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> CliResult<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)
            .map_err(|e| anyhow::Error::new(e).context("reading the terminal's settings"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&stdin, SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow::Error::new(e).context("putting the terminal in raw mode"))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
