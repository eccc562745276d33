//! The application, apart from its front ends: the state every request can reach and the use
//! cases REST (`api`) and WebSocket (`ws`) share, so both parse a command the same way and send
//! it to the VM's actor by the same path. `startup` builds the state; nothing here knows HTTP.

pub mod access;
pub mod ids;
pub mod lifecycle;
pub mod state;

pub use state::{AppState, NodeState};
