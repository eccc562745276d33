//! Which console of a VM a viewer opened. Opening and closing a console are recorded in the VM's
//! stream (`ConsoleOpened`, `ConsoleClosed`) with the user who did it; they change nothing else.

use serde::{Deserialize, Serialize};

/// A console of a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleKind {
    /// The serial port (`ttyS0`), bridged to QEMU's `console.sock`.
    Serial,
    /// The graphical console: QEMU's VNC server on `vnc.sock`.
    Vnc,
}

impl ConsoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleKind::Serial => "serial",
            ConsoleKind::Vnc => "vnc",
        }
    }
}

impl std::fmt::Display for ConsoleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
