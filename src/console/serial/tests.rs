//! The hub against a fake machine: an in-memory serial log and a duplex pipe for the socket.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, DuplexStream};

use super::*;
use crate::console::ports::LogRead;

#[derive(Default)]
struct FakeMachine {
    log: Mutex<Vec<u8>>,
    /// The machine's ends of the serial connections made so far.
    sockets: Mutex<Vec<DuplexStream>>,
    connects: AtomicUsize,
}

impl FakeMachine {
    /// The guest writes `bytes` to its serial port (QEMU logs them).
    fn write(&self, bytes: &[u8]) {
        lock(&self.log).extend_from_slice(bytes);
    }

    fn socket(&self, n: usize) -> DuplexStream {
        lock(&self.sockets).remove(n)
    }
}

#[async_trait]
impl ConsolePorts for FakeMachine {
    async fn serial(&self, _vm_id: &str) -> std::io::Result<Link> {
        self.connects.fetch_add(1, Ordering::SeqCst);
        let (ours, theirs) = tokio::io::duplex(4096);
        lock(&self.sockets).push(theirs);
        let (reader, writer) = tokio::io::split(ours);
        Ok(Link {
            reader: Box::new(reader),
            writer: Box::new(writer),
        })
    }

    async fn vnc(&self, _vm_id: &str) -> std::io::Result<Link> {
        Err(std::io::Error::other("no VNC here"))
    }

    async fn read_log(&self, _vm_id: &str, offset: u64, max: usize) -> std::io::Result<LogRead> {
        let log = lock(&self.log);
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        let end = start.saturating_add(max).min(log.len());
        Ok(LogRead {
            bytes: log[start..end].to_vec(),
            len: log.len() as u64,
        })
    }
}

fn hubs(machine: &Arc<FakeMachine>) -> Arc<SerialHubs> {
    SerialHubs::new(machine.clone(), Duration::from_millis(5))
}

/// Reads a viewer's output until it holds `want`, failing after 5 s.
async fn read_until(viewer: &mut SerialViewer, want: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !got.windows(want.len()).any(|w| w == want) {
        match tokio::time::timeout_at(deadline, viewer.next()).await {
            Ok(Output::Bytes(bytes)) => got.extend_from_slice(&bytes),
            other => panic!("waiting for {want:?}, got {other:?} after {got:?}"),
        }
    }
    got
}

#[tokio::test]
async fn a_new_viewer_first_gets_the_last_64_kib_of_output() {
    let machine = Arc::new(FakeMachine::default());
    machine.write(&[b'a'; 10]);
    machine.write(&vec![b'b'; RECENT_BYTES]);
    let viewer = hubs(&machine).attach("vm-1").await.expect("attached");
    assert_eq!(viewer.recent, vec![b'b'; RECENT_BYTES]);
}

#[tokio::test]
async fn viewers_share_one_connection_and_see_the_same_output() {
    let machine = Arc::new(FakeMachine::default());
    machine.write(b"boot\n");
    let hubs = hubs(&machine);
    let mut first = hubs.attach("vm-1").await.expect("first");
    let mut second = hubs.attach("vm-1").await.expect("second");
    assert_eq!(machine.connects.load(Ordering::SeqCst), 1);
    assert_eq!(hubs.viewers("vm-1"), 2);
    machine.write(b"hello\n");
    assert_eq!(read_until(&mut first, b"hello\n").await, b"hello\n");
    assert_eq!(read_until(&mut second, b"hello\n").await, b"hello\n");
}

#[tokio::test]
async fn a_later_viewer_gets_earlier_output_once_with_no_gap() {
    let machine = Arc::new(FakeMachine::default());
    let hubs = hubs(&machine);
    let mut first = hubs.attach("vm-1").await.expect("first");
    machine.write(b"one\n");
    read_until(&mut first, b"one\n").await;
    let mut later = hubs.attach("vm-1").await.expect("later");
    machine.write(b"two\n");
    assert_eq!(later.recent, b"one\n");
    assert_eq!(read_until(&mut later, b"two\n").await, b"two\n");
}

#[tokio::test]
async fn every_viewers_input_reaches_the_socket() {
    let machine = Arc::new(FakeMachine::default());
    let hubs = hubs(&machine);
    let first = hubs.attach("vm-1").await.expect("first");
    let second = hubs.attach("vm-1").await.expect("second");
    let mut socket = machine.socket(0);
    first.send(Bytes::from_static(b"ls\n")).await.expect("sent");
    second
        .send(Bytes::from_static(b"pwd\n"))
        .await
        .expect("sent");
    let mut got = vec![0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut got))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(got, b"ls\npwd\n");
}

#[tokio::test]
async fn the_socket_is_let_go_when_the_last_viewer_leaves() {
    let machine = Arc::new(FakeMachine::default());
    let hubs = hubs(&machine);
    let viewer = hubs.attach("vm-1").await.expect("attached");
    let mut socket = machine.socket(0);
    drop(viewer);
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("the hub lets go in time");
    assert_eq!(read.expect("a clean end"), 0);
    assert_eq!(hubs.viewers("vm-1"), 0);
    let _again = hubs.attach("vm-1").await.expect("attached again");
    assert_eq!(machine.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn viewers_end_when_the_machine_closes_its_serial_port() {
    let machine = Arc::new(FakeMachine::default());
    let hubs = hubs(&machine);
    let mut viewer = hubs.attach("vm-1").await.expect("attached");
    machine.write(b"power off\n");
    drop(machine.socket(0));
    read_until(&mut viewer, b"power off\n").await;
    let end = tokio::time::timeout(Duration::from_secs(5), viewer.next())
        .await
        .expect("in time");
    assert_eq!(end, Output::Ended);
}
