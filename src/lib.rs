//! VoidVM: an event-sourced control plane for QEMU virtual machines.

pub mod vm;
