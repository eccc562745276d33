//! The actors that carry VoidVM: one [`vm_actor::VmActor`] per VM that is in use, serialising
//! that VM's commands, and the [`worker::JobWorker`]s that carry jobs out against the hypervisor.

pub mod job_steps;
pub mod observer;
pub mod registry;
mod snapshot_steps;
pub mod vm_actor;
pub mod worker;

pub use registry::{ActorError, VmRegistry};
