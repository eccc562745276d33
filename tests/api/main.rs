//! The integration tests: one binary, real PostgreSQL and real QEMU (TCG). Run
//! `scripts/setup.sh` first; a missing service or guest fails a test with a clear message.

mod accounts;
mod audit;
mod auth;
mod bad_input;
mod bridge;
mod cli;
mod cloud_init;
mod crash;
mod errors;
mod feed;
mod helpers;
mod hypervisor;
mod idempotency;
mod image_feed;
mod images;
mod iso;
mod jobs;
mod leases;
mod lifecycle;
mod metrics;
mod network;
mod observations;
mod openapi;
mod processes;
mod receiver;
mod relay;
mod schemas;
mod sessions;
mod settings;
mod snapshots;
mod stream_owner;
mod system;
mod transactions;
mod webhooks;
mod ws_client;
