//! Webhooks: the event log of the VMs a user may read, delivered to an HTTP receiver of theirs.
//!
//! A webhook is an aggregate in the same log as VMs and accounts (stream type `webhook`), so
//! `/events` says who added, changed or removed which one; its signing secret lives only in the
//! `webhooks` table. Deliveries come from the log by position ([`dispatcher`]): in order per VM,
//! signed ([`signature`]), retried with backoff, at least once, and resumed after a crash from the
//! last position whose delivery rows committed.

pub mod dispatcher;
pub mod hook;
pub mod signature;
pub mod target;
pub mod transport;

pub use hook::{Webhook, WebhookChange, WebhookCommand, WebhookError, WebhookEvent};
pub use target::{EventSelection, Secret, TargetUrl};

#[cfg(test)]
mod tests;
