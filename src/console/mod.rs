//! A VM's consoles: the serial console (one hub per VM on this node, holding QEMU's single
//! serial connection for all its viewers) and the graphical console (QEMU's VNC server, a new
//! connection per viewer), reached through the `ports` edge. `/api/v1/vms/{id}/console`,
//! `/api/v1/vms/{id}/vnc` (`api::vms::console`) and the `terminal-*` and `vnc-*` frames of `/ws`
//! (`ws::session::consoles`) are their front ends; `sessions` records their opening and closing.

pub mod bridge;
pub mod ports;
pub mod rfb;
pub mod serial;
pub mod sessions;

pub use ports::{ConsolePorts, Link, MachinePorts};
pub use serial::{ConsoleError, Output, SerialHubs, SerialViewer};

use std::sync::Arc;
use std::time::Duration;

/// How often a serial hub looks at the log when the socket did not wake it.
const SERIAL_POLL: Duration = Duration::from_millis(25);

/// This node's consoles.
#[derive(Clone)]
pub struct Consoles {
    pub serial: Arc<SerialHubs>,
    pub ports: Arc<dyn ConsolePorts>,
}

impl Consoles {
    /// The consoles of the machines under `data_dir`.
    pub fn new(data_dir: std::path::PathBuf) -> Consoles {
        let ports: Arc<dyn ConsolePorts> = Arc::new(MachinePorts::new(data_dir));
        Consoles {
            serial: SerialHubs::new(ports.clone(), SERIAL_POLL),
            ports,
        }
    }
}
