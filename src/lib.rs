//! VoidVM: an event-sourced control plane for QEMU virtual machines.
//!
//! A command arrives over HTTP ([`api`]), is decided by the VM's actor ([`actors`]) against the
//! aggregate ([`vm`]), and is recorded as events in PostgreSQL ([`store`]), which also yields a
//! job; worker actors carry the job out against QEMU ([`hypervisor`]) and record the outcome.

pub mod accounts;
pub mod actors;
pub mod api;
pub mod app;
pub mod auth;
pub mod bus;
pub mod cli;
pub mod config;
pub mod console;
pub mod hypervisor;
pub mod images;
pub mod job_events;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod notifier;
pub mod outbound;
pub mod publish;
pub mod reconcile;
pub mod startup;
pub mod store;
pub mod system;
pub mod telemetry;
pub mod vm;
pub mod webhooks;
pub mod ws;
