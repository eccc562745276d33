//! `voidvm vm vnc VM`: a running VM's graphical console for any VNC viewer. The CLI listens on a
//! local TCP port and carries each viewer's connection over its own
//! `/api/v1/vms/{id}/vnc` WebSocket, with the CLI's token (as `incus console --type=vga` or
//! `virtctl vnc --proxy-only` do): the API decides who may connect, and QEMU's VNC server never
//! listens beyond its host.
//!
//! The address goes alone on stdout (`127.0.0.1:5901`, for a script to pick up); what to do with
//! it goes on stderr. Ctrl-C ends it; `--once` ends it when the first viewer leaves.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::client::{CliError, CliResult, Client};
use super::console::{connect, Console, Socket};

pub async fn run(client: &Client, vm: &str, listen: SocketAddr, once: bool) -> CliResult<()> {
    let id = super::vm::resolve(client, vm).await?;
    let token = client.require_token()?.to_string();
    // Refused now rather than when a viewer connects: not running, not allowed, no such VM.
    let mut probe = connect(client.origin(), &id, &token, Console::Vnc).await?;
    let _ = probe.close(None).await;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| CliError::Usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Unexpected(anyhow::Error::new(e).context("the local address")))?;
    println!("{addr}");
    if !addr.ip().is_loopback() {
        eprintln!(
            "Warning: {addr} is not a loopback address: anyone who reaches it gets this VM's \
             screen with your permissions."
        );
    }
    eprintln!(
        "The graphical console of {id} is on {addr}: point a VNC viewer at it (e.g. \
         `vncviewer {}::{}`). {}",
        addr.ip(),
        addr.port(),
        if once {
            "It ends when the viewer leaves."
        } else {
            "Ctrl-C ends it."
        }
    );
    let origin = client.origin().to_string();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| {
                CliError::Unexpected(anyhow::Error::new(e).context("accepting a viewer"))
            })?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let ws = match connect(&origin, &id, &token, Console::Vnc).await {
            Ok(ws) => ws,
            Err(e) if once => return Err(e),
            Err(e) => {
                eprintln!("A viewer from {peer} could not be connected: {e}");
                continue;
            }
        };
        if once {
            bridge(tcp, ws).await;
            eprintln!("The viewer left.");
            return Ok(());
        }
        eprintln!("A viewer connected from {peer}.");
        tokio::spawn(bridge(tcp, ws));
    }
}

/// Carries bytes both ways until either side ends, then ends the other.
async fn bridge(tcp: TcpStream, ws: Socket) {
    let (mut from_viewer, mut to_viewer) = tcp.into_split();
    let (mut to_vm, mut from_vm) = ws.split();
    let upstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from_viewer.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_vm
                        .send(Message::binary(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = to_vm.send(Message::Close(None)).await;
    };
    let downstream = async {
        while let Some(message) = from_vm.next().await {
            match message {
                Ok(Message::Binary(bytes)) => {
                    if to_viewer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = to_viewer.shutdown().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
