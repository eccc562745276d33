//! Why the aggregate refuses a command. These are business answers, not failures: each maps to a
//! 4xx with a stable code in the API layer.

use super::snapshots::{refusal, SnapshotName};
use super::status::{Operation, Rejection, VmStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VmError {
    #[error("A virtual machine with this id already exists.")]
    AlreadyExists,
    #[error("The virtual machine does not exist.")]
    NotFound,
    #[error("{}", rejected(*status, *operation, *rejection))]
    Rejected {
        status: VmStatus,
        operation: Operation,
        rejection: Rejection,
    },
    #[error("The virtual machine is {status}, so its settings cannot change now.")]
    NotReconfigurable {
        status: VmStatus,
        rejection: Rejection,
    },
    #[error("The virtual machine is {status}, so its console cannot be opened.")]
    NoConsole {
        status: VmStatus,
        rejection: Rejection,
    },
    #[error("The change names no setting that differs from the current one.")]
    NothingToChange,
    #[error("Job {job_id} is not the job in progress for this virtual machine.")]
    NotTheCurrentJob { job_id: String },
    #[error("Job {job_id} provisions the virtual machine and cannot be cancelled.")]
    NotCancellable { job_id: String },
    #[error("The virtual machine already has a snapshot named '{name}'.")]
    SnapshotExists { name: SnapshotName },
    #[error("The virtual machine has no snapshot named '{name}'.")]
    SnapshotNotFound { name: SnapshotName },
    /// The snapshot table (`snapshots::snapshot_rule`) refused the change in this status.
    #[error("{}", refusal(*status, *rejection))]
    SnapshotRefused {
        status: VmStatus,
        rejection: Rejection,
    },
    #[error("A {operation} job cannot end with that result.")]
    ResultDoesNotFit { operation: Operation },
}

/// The sentence of [`VmError::Rejected`]: a VM busy with a job says so, whatever its status.
fn rejected(status: VmStatus, operation: Operation, rejection: Rejection) -> String {
    match rejection {
        Rejection::Busy => format!(
            "The virtual machine is {status} and another job of it is in progress, so it cannot {} until that job ends.",
            operation.phrase()
        ),
        _ => format!(
            "The virtual machine is {status}, so it cannot {}.",
            operation.phrase()
        ),
    }
}
