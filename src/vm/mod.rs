//! The virtual machine as an event-sourced aggregate: its commands, its events, its lifecycle
//! table and the rules that tie them together. Nothing here touches IO.

pub mod aggregate;
pub mod cloud_init;
pub mod commands;
pub mod console;
pub mod error;
pub mod events;
pub mod network;
pub mod process;
pub mod snapshots;
pub mod status;

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

pub use aggregate::{PendingJob, Vm};
pub use cloud_init::{BootDevice, CloudInitSecrets, CloudInitSpec, CloudUser};
pub use commands::{JobResult, ObservationKind, Observed, Reconfiguration, VmCommand};
pub use console::ConsoleKind;
pub use error::VmError;
pub use events::{JobEffect, JobOutcome, Owner, VmEvent, VmSpec};
pub use network::{mac_address, tap_name, NetworkMode, NetworkSpec, PortForward, Protocol};
pub use process::MachineProcess;
pub use snapshots::{SnapshotAction, SnapshotName, VmSnapshot};
pub use status::{Operation, Rejection, VmStatus};
