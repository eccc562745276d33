//! One WebSocket connection, from its first frame to its close.
//!
//! A connection reads the hub's broadcast of live events and its own client's frames in one loop.
//! Each log subscription keeps a cursor (the last position it has passed), so:
//! - `since` replays from the log after the cursor, then live events at or below the cursor are
//!   skipped: no gap and no duplicate at the seam, because the log is read only below the bound
//!   no later commit can go under (`store::visible`), the relay publishes the same way, and the
//!   connection listened to the hub before it read the log;
//! - a connection that fell behind the broadcast catches up from the log the same way;
//! - frames wait in a bounded queue for a writer task; a client that leaves the queue full for
//!   `slow_after_ms` is closed as too slow (with the position to resume from), and nobody else
//!   waits for it.
//!
//! This module holds the connection's state; its work is split by what it does:
//! - `lifecycle`: authentication, the select loop, heartbeat, expiry and revocation, the close;
//! - `requests`: the client's frames, parsed and answered;
//! - `subscriptions`: subscribe, unsubscribe, and the replay and catch-up from the log;
//! - `fanout`: live events, system events, monitor and usage ticks, turned into frames;
//! - `writer`: the bounded send queue, its writer task, and the slow-client rule;
//! - `control`: `vm-control`, a lifecycle verb sent over the socket;
//! - `consoles`, `terminal`, `vnc`: the console frames (`terminal-*`, `vnc-*`).

mod consoles;
mod control;
mod fanout;
mod lifecycle;
mod requests;
mod subscriptions;
mod terminal;
mod vnc;
mod writer;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use actix_ws::CloseCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use self::subscriptions::LogSub;
use self::writer::{Out, Writer};
use super::limits::Slot;
use crate::app::AppState;
use crate::auth::AuthUser;
use crate::monitor::host::HostMonitor;

pub use self::lifecycle::{run, run_unauthenticated};

/// Why a connection ends.
#[derive(Debug)]
pub enum End {
    /// The client went away without a close frame.
    Gone,
    /// The client sent a close frame: answered with one of the same code (RFC 6455 §5.5.1).
    Answered(Option<actix_ws::CloseReason>),
    /// The server closes it with this reason.
    Close(CloseCode, String),
    /// The client does not read fast enough.
    Slow(String),
}

pub struct Connection {
    state: web::Data<AppState>,
    user: AuthUser,
    out: mpsc::Sender<Out>,
    /// The last log position handed to the socket (-1: none yet).
    written: Arc<AtomicI64>,
    slow_after: Duration,
    subs: Vec<LogSub>,
    system_events: bool,
    monitor: Option<(HostMonitor, tokio::time::Interval, u64)>,
    last_heard: Instant,
    consoles: consoles::ConsoleLinks,
    _slot: Slot,
}

impl Connection {
    fn new(state: web::Data<AppState>, user: AuthUser, writer: Writer, slot: Slot) -> Connection {
        let slow_after = Duration::from_millis(state.settings.ws.slow_after_ms);
        Connection {
            state,
            user,
            out: writer.tx,
            written: writer.written,
            slow_after,
            subs: Vec::new(),
            system_events: false,
            monitor: None,
            last_heard: Instant::now(),
            consoles: consoles::ConsoleLinks::new(),
            _slot: slot,
        }
    }

    fn who(&self) -> Value {
        json!({
            "userId": self.user.id,
            "username": self.user.name,
            "role": self.user.role.id,
            "expiresAt": chrono::DateTime::from_timestamp(self.user.expires_at, 0),
        })
    }
}
