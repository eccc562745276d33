//! The edge between the consoles and QEMU: the machine's serial socket and log, and its VNC
//! socket, behind one small trait so the serial hub can be tested with a fake.

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite};

use crate::hypervisor::paths::MachinePaths;

/// A connection to one of a machine's console sockets, split in its two directions.
pub struct Link {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
}

/// What a read of the serial log found: the bytes from the offset asked for, and how long the
/// file is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub bytes: Vec<u8>,
    pub len: u64,
}

/// A machine's console sockets and serial log.
#[async_trait]
pub trait ConsolePorts: Send + Sync + 'static {
    /// Connects to the serial console's socket (QEMU serves one client at a time).
    async fn serial(&self, vm_id: &str) -> io::Result<Link>;
    /// Connects to the VNC server's socket (a new client each time; QEMU serves several).
    async fn vnc(&self, vm_id: &str) -> io::Result<Link>;
    /// At most `max` bytes of the serial log from `offset`, and the log's length now.
    async fn read_log(&self, vm_id: &str, offset: u64, max: usize) -> io::Result<LogRead>;
}

/// The real sockets and log, in the machines' directories under the data dir.
pub struct MachinePorts {
    data_dir: PathBuf,
}

impl MachinePorts {
    pub fn new(data_dir: PathBuf) -> MachinePorts {
        MachinePorts { data_dir }
    }

    fn paths(&self, vm_id: &str) -> io::Result<MachinePaths> {
        MachinePaths::checked(&self.data_dir, vm_id)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }
}

async fn connect(path: PathBuf) -> io::Result<Link> {
    let stream = tokio::net::UnixStream::connect(&path).await?;
    let (reader, writer) = stream.into_split();
    Ok(Link {
        reader: Box::new(reader),
        writer: Box::new(writer),
    })
}

#[async_trait]
impl ConsolePorts for MachinePorts {
    async fn serial(&self, vm_id: &str) -> io::Result<Link> {
        connect(self.paths(vm_id)?.console).await
    }

    async fn vnc(&self, vm_id: &str) -> io::Result<Link> {
        connect(self.paths(vm_id)?.vnc).await
    }

    async fn read_log(&self, vm_id: &str, offset: u64, max: usize) -> io::Result<LogRead> {
        let path = self.paths(vm_id)?.serial_log;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(LogRead {
                    bytes: Vec::new(),
                    len: 0,
                })
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        let mut bytes = Vec::new();
        if offset < len && max > 0 {
            file.seek(io::SeekFrom::Start(offset)).await?;
            let want = usize::try_from(len - offset).unwrap_or(usize::MAX).min(max);
            bytes.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                let n = file.read(&mut bytes[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            bytes.truncate(filled);
        }
        Ok(LogRead { bytes, len })
    }
}
