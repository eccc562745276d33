//! One-shot QMP commands on a machine's command monitor (`qmp.sock`).
//!
//! Every command opens its own connection, negotiates, executes and hangs up, so no operation
//! (a stop waiting for the guest, say) ever holds the monitor while another wants it, and a
//! restarted server needs no connection state. Events are not read here: the watcher has a
//! monitor of its own (see [`super::watch`]).

use std::path::Path;
use std::time::Duration;

use qapi::futures::QmpStreamTokio;
use qapi::qmp::QmpCommand;
use qapi::ExecuteError;

use super::HypervisorError;

/// Why a QMP command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The monitor could not be reached or the connection broke (the socket is not up yet, or
    /// QEMU is exiting).
    #[error("the QMP monitor is unreachable ({0})")]
    Unavailable(String),
    /// QEMU answered with an error.
    #[error("QEMU refused the command ({0})")]
    Refused(String),
    /// No answer within the timeout.
    #[error("the QMP monitor did not answer in time")]
    TimedOut,
}

impl From<QmpError> for HypervisorError {
    fn from(e: QmpError) -> Self {
        match e {
            QmpError::Refused(_) => HypervisorError::Permanent(e.to_string()),
            QmpError::Unavailable(_) | QmpError::TimedOut => {
                HypervisorError::Transient(e.to_string())
            }
        }
    }
}

/// Connects to `socket`, negotiates capabilities and executes `command`, all within `timeout`.
pub async fn execute<C>(socket: &Path, command: C, timeout: Duration) -> Result<C::Ok, QmpError>
where
    C: QmpCommand + 'static,
{
    let run = async {
        let negotiation = QmpStreamTokio::open_uds(socket)
            .await
            .map_err(|e| QmpError::Unavailable(e.to_string()))?;
        let mut stream = negotiation
            .negotiate()
            .await
            .map_err(|e| QmpError::Unavailable(e.to_string()))?;
        stream.execute(command).await.map_err(|e| match e {
            ExecuteError::Qapi(e) => QmpError::Refused(e.to_string()),
            ExecuteError::Io(e) => QmpError::Unavailable(e.to_string()),
        })
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(QmpError::TimedOut),
    }
}
