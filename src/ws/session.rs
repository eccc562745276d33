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

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web;
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use bytestring::ByteString;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::limits::Slot;
use super::protocol::{self, ClientFrame, ClientKind, IntervalBounds, Topic};
use crate::api::answers::Accepted;
use crate::api::error::ApiError;
use crate::app::lifecycle::{self, Action, LifecycleError, Params, Verb};
use crate::app::AppState;
use crate::auth::cache::{self, TokenRef};
use crate::auth::{self, AuthUser};
use crate::bus::system::SystemEvent;
use crate::bus::FeedEvent;
use crate::monitor::host::HostMonitor;
use crate::store::conditions::Conditions;
use crate::store::{feed, vm_view, Via};

/// Subscriptions a connection may hold.
const MAX_SUBSCRIPTIONS: usize = 64;
/// Events read from the log per query while replaying.
const REPLAY_PAGE: u32 = 500;

enum Out {
    /// A frame, and the log position it carries.
    Text(ByteString, Option<i64>),
    Ping,
    Pong(bytes::Bytes),
    Close(CloseReason),
}

/// Why a connection ends.
#[derive(Debug)]
pub enum End {
    /// The client closed or went away.
    Gone,
    /// The server closes it with this reason.
    Close(CloseCode, String),
    /// The client does not read fast enough.
    Slow(String),
}

struct LogSub {
    topic: Topic,
    /// The last position this subscription has passed.
    cursor: i64,
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
    _slot: Slot,
}

/// Runs a connection whose user is already known (token in the query).
pub async fn run(
    state: web::Data<AppState>,
    session: Session,
    mut stream: MessageStream,
    user: AuthUser,
    slot: Slot,
) {
    let (out, writer) = start_writer(&state, session.clone());
    let mut conn = Connection::new(state, user, out, slot);
    if conn
        .send(protocol::frame("authenticated", conn.who(), &Value::Null))
        .await
        .is_ok()
    {
        let end = conn.serve(&mut stream).await;
        conn.finish(end, session, writer).await;
    }
}

/// Runs a connection that must authenticate with an `auth` frame first.
pub async fn run_unauthenticated(
    state: web::Data<AppState>,
    mut session: Session,
    mut stream: MessageStream,
    client_addr: Option<String>,
) {
    let timeout = Duration::from_secs(state.settings.ws.auth_timeout_secs);
    let first = tokio::time::timeout(timeout, next_text(&mut stream)).await;
    let refuse = |e: &ApiError, id: &Value| protocol::error_frame(e, id);
    let (user, id) = match first {
        Err(_) => {
            let _ = session
                .close(Some(reason(
                    CloseCode::Policy,
                    "no auth frame arrived in time",
                )))
                .await;
            return;
        }
        Ok(Err(ProtocolError::Overflow)) => {
            let e = ApiError::FrameTooLarge(super::MAX_FRAME_BYTES);
            let _ = session.text(refuse(&e, &Value::Null)).await;
            let _ = session
                .close(Some(reason(CloseCode::Size, &e.to_string())))
                .await;
            return;
        }
        Ok(Err(_)) | Ok(Ok(None)) => return,
        Ok(Ok(Some(text))) => match protocol::parse(&text, bounds(&state)) {
            Ok(ClientFrame {
                kind: ClientKind::Auth { token },
                id,
            }) => match auth::user::authenticate(&state, &token, None, client_addr).await {
                Ok(user) => (user, id),
                Err(e) => {
                    let _ = session.text(refuse(&e, &id)).await;
                    let _ = session
                        .close(Some(reason(CloseCode::Policy, "authentication failed")))
                        .await;
                    return;
                }
            },
            Ok(other) => {
                let e = ApiError::Unauthorized("Send an auth frame first.".into());
                let _ = session.text(refuse(&e, &other.id)).await;
                let _ = session
                    .close(Some(reason(CloseCode::Policy, "authentication required")))
                    .await;
                return;
            }
            Err((id, e)) => {
                let _ = session.text(refuse(&e, &id)).await;
                let _ = session
                    .close(Some(reason(CloseCode::Policy, "authentication required")))
                    .await;
                return;
            }
        },
    };
    let Some(slot) = state.ws_limits.acquire(&user.id) else {
        let e = ApiError::TooManyConnections(state.ws_limits.max());
        let _ = session.text(refuse(&e, &id)).await;
        let _ = session
            .close(Some(reason(CloseCode::Policy, &e.to_string())))
            .await;
        return;
    };
    let (out, writer) = start_writer(&state, session.clone());
    let mut conn = Connection::new(state, user, out, slot);
    if conn
        .send(protocol::frame("authenticated", conn.who(), &id))
        .await
        .is_ok()
    {
        let end = conn.serve(&mut stream).await;
        conn.finish(end, session, writer).await;
    }
}

fn bounds(state: &AppState) -> IntervalBounds {
    IntervalBounds {
        min_ms: state.settings.ws.monitor_min_interval_ms,
        max_ms: state.settings.ws.monitor_max_interval_ms,
    }
}

/// A close reason; the protocol allows 123 bytes.
fn reason(code: CloseCode, text: &str) -> CloseReason {
    let mut text = text.to_string();
    while text.len() > 123 {
        text.pop();
    }
    CloseReason {
        code,
        description: Some(text),
    }
}

/// The first text frame; `None` when the client closed first.
async fn next_text(stream: &mut MessageStream) -> Result<Option<String>, ProtocolError> {
    while let Some(msg) = stream.next().await {
        match msg? {
            Message::Text(text) => return Ok(Some(text.to_string())),
            Message::Close(_) => return Ok(None),
            _ => continue,
        }
    }
    Ok(None)
}

/// The task that writes queued frames to the socket; it is the only one that waits on it.
fn start_writer(state: &AppState, mut session: Session) -> (Writer, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Out>(state.settings.ws.send_queue);
    let written = Arc::new(AtomicI64::new(-1));
    let progress = written.clone();
    let writer = actix_web::rt::spawn(async move {
        while let Some(out) = rx.recv().await {
            let sent = match out {
                Out::Text(text, position) => {
                    let sent = session.text(text).await;
                    if let (Ok(()), Some(p)) = (&sent, position) {
                        progress.store(p, Ordering::SeqCst);
                    }
                    sent
                }
                Out::Ping => session.ping(b"").await,
                Out::Pong(bytes) => session.pong(&bytes).await,
                Out::Close(reason) => {
                    let _ = session.close(Some(reason)).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    });
    (Writer { tx, written }, writer)
}

/// The queue to a connection's writer task, and how far the writer got.
struct Writer {
    tx: mpsc::Sender<Out>,
    written: Arc<AtomicI64>,
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
            _slot: slot,
        }
    }

    fn who(&self) -> Value {
        json!({
            "userId": self.user.id,
            "username": self.user.name,
            "role": self.user.role.as_str(),
            "expiresAt": chrono::DateTime::from_timestamp(self.user.expires_at, 0),
        })
    }

    /// The position a cut-off client can resume from: the last one it was sent.
    fn resume_position(&self) -> Option<i64> {
        Some(self.written.load(Ordering::SeqCst)).filter(|p| *p >= 0)
    }

    /// Queues a frame that does not come from the log.
    async fn send(&self, text: impl Into<ByteString>) -> Result<(), End> {
        self.send_at(text.into(), None).await
    }

    /// Queues a frame; waits at most `slow_after` for room.
    async fn send_at(&self, text: ByteString, position: Option<i64>) -> Result<(), End> {
        match self.out.try_send(Out::Text(text, position)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(End::Gone),
            Err(TrySendError::Full(out)) => {
                match tokio::time::timeout(self.slow_after, self.out.send(out)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(End::Gone),
                    Err(_) => Err(End::Slow(match self.resume_position() {
                        Some(p) => {
                            format!("too slow: the send queue stayed full; resume with since={p}")
                        }
                        None => "too slow: the send queue stayed full".to_string(),
                    })),
                }
            }
        }
    }

    async fn serve(&mut self, stream: &mut MessageStream) -> End {
        let ws = &self.state.settings.ws;
        let idle_timeout = Duration::from_secs(ws.idle_timeout_secs);
        let mut ping = tokio::time::interval(Duration::from_secs(ws.ping_interval_secs));
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut usage = tokio::time::interval(Duration::from_millis(ws.usage_interval_ms.max(100)));
        usage.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expires_in = (self.user.expires_at - chrono::Utc::now().timestamp()).max(0);
        let expiry = tokio::time::sleep(Duration::from_secs(expires_in.unsigned_abs()));
        tokio::pin!(expiry);
        let mut auth_changes = self.state.auth.changes();
        let mut events = self.state.hub.events();
        let mut system = self.state.hub.system();
        loop {
            let result = tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.on_message(msg).await
                    }
                    Some(Err(ProtocolError::Overflow)) => {
                        let e = ApiError::FrameTooLarge(super::MAX_FRAME_BYTES);
                        match self.send(protocol::error_frame(&e, &Value::Null)).await {
                            Ok(()) => Err(End::Close(CloseCode::Size, e.to_string())),
                            Err(end) => Err(end),
                        }
                    }
                    Some(Err(e)) => Err(End::Close(CloseCode::Protocol, format!("protocol error: {e}"))),
                    None => Err(End::Gone),
                },
                event = events.recv() => match event {
                    Ok(event) => self.on_event(&event).await,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(user_id = %self.user.id, missed, "connection fell behind the hub; catching up from the log");
                        self.catch_up_all().await
                    }
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                event = system.recv() => match event {
                    Ok(event) => self.on_system(&event).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                    Err(broadcast::error::RecvError::Closed) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                _ = ping.tick() => self.on_ping_tick(idle_timeout).await,
                changed = auth_changes.changed() => match changed {
                    Ok(()) => self.check_token().await,
                    Err(_) => Err(End::Close(CloseCode::Restart, "the server is stopping".into())),
                },
                _ = usage.tick() => self.on_usage_tick().await,
                _ = monitor_tick(&mut self.monitor) => self.on_monitor_tick().await,
                () = &mut expiry => Err(End::Close(CloseCode::Policy, "token expired: connect again with a new token".into())),
                () = self.state.stopping.cancelled() => Err(End::Close(CloseCode::Away, match self.resume_position() {
                    Some(p) => format!("the server is stopping; resume with since={p}"),
                    None => "the server is stopping".to_string(),
                })),
            };
            if let Err(end) = result {
                return end;
            }
        }
    }

    /// Pings, and ends connections that went quiet or whose token was revoked (logout).
    async fn on_ping_tick(&self, idle_timeout: Duration) -> Result<(), End> {
        if self.last_heard.elapsed() > idle_timeout {
            return Err(End::Close(
                CloseCode::Policy,
                "heartbeat timeout: no pong or message arrived in time".into(),
            ));
        }
        self.check_token().await?;
        // A full queue skips a ping; the slow-client rule deals with that.
        let _ = self.out.try_send(Out::Ping);
        Ok(())
    }

    /// Ends the connection when its token was revoked (logout), its password changed or its
    /// user is gone; checked on every ping and whenever the node's auth cache hears of a change.
    async fn check_token(&self) -> Result<(), End> {
        let token = TokenRef {
            jti: &self.user.jti,
            user_id: &self.user.id,
            generation: self.user.token_generation,
        };
        match self.state.auth.check(&self.state.pool, token).await {
            Ok(_) => Ok(()),
            // The database is away: keep the connection; the next tick checks again.
            Err(cache::Refusal::Store(e)) => {
                tracing::debug!(error = %crate::telemetry::chain(&e), "the token could not be checked");
                Ok(())
            }
            Err(refusal) => Err(End::Close(
                CloseCode::Policy,
                format!("token revoked: {refusal} Connect again with a new token."),
            )),
        }
    }

    async fn finish(self, end: End, session: Session, writer: tokio::task::JoinHandle<()>) {
        let user_id = self.user.id.clone();
        match end {
            End::Gone => {
                drop(self);
                writer.abort();
            }
            End::Close(code, text) => {
                tracing::info!(user_id, reason = %text, "closing a WebSocket connection");
                let close = Out::Close(reason(code, &text));
                if tokio::time::timeout(Duration::from_secs(1), self.out.send(close))
                    .await
                    .is_err()
                {
                    writer.abort();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        session.close(Some(reason(code, &text))),
                    )
                    .await;
                }
            }
            End::Slow(text) => {
                tracing::warn!(user_id, reason = %text, "closing a WebSocket connection that does not keep up");
                drop(self);
                writer.abort();
                // The close frame goes out once the client reads what was already sent; the
                // connection's place and queue are released now.
                actix_web::rt::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        session.close(Some(reason(CloseCode::Again, &text))),
                    )
                    .await;
                });
            }
        }
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), End> {
        match msg {
            Message::Text(text) => match protocol::parse(&text, bounds(&self.state)) {
                Ok(frame) => self.on_frame(frame).await,
                Err((id, e)) => self.send(protocol::error_frame(&e, &id)).await,
            },
            Message::Binary(_) => {
                let e = ApiError::validation("frame", "Frames must be text (JSON), not binary.");
                self.send(protocol::error_frame(&e, &Value::Null)).await
            }
            Message::Ping(bytes) => {
                let _ = self.out.try_send(Out::Pong(bytes));
                Ok(())
            }
            Message::Close(_) => Err(End::Gone),
            Message::Pong(_) | Message::Continuation(_) | Message::Nop => Ok(()),
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        let id = frame.id;
        let answer = match frame.kind {
            ClientKind::Auth { .. } => Err(ApiError::validation(
                "type",
                "This connection is already authenticated.",
            )),
            ClientKind::Ping => Ok(("pong", json!({}))),
            ClientKind::Subscribe { topic, since } => {
                return match self.subscribe(topic, since, &id).await {
                    Ok(()) => Ok(()),
                    Err(Refusal::Api(e)) => self.send(protocol::error_frame(&e, &id)).await,
                    Err(Refusal::End(end)) => Err(end),
                };
            }
            ClientKind::Unsubscribe { topic } => Ok(("unsubscribed", self.unsubscribe(&topic))),
            ClientKind::VmControl {
                vm_id,
                verb,
                params,
            } => self
                .control(&vm_id, verb, params)
                .await
                .map(|data| ("vm-control-response", data)),
        };
        match answer {
            Ok((kind, data)) => self.send(protocol::frame(kind, data, &id)).await,
            Err(e) => self.send(protocol::error_frame(&e, &id)).await,
        }
    }

    async fn subscribe(
        &mut self,
        topic: Topic,
        since: Option<i64>,
        id: &Value,
    ) -> Result<(), Refusal> {
        match &topic {
            Topic::SystemEvent | Topic::SystemMonitor { .. } if !self.user.is_admin() => {
                return Err(Refusal::Api(ApiError::Forbidden(format!(
                    "Only administrators may subscribe to {}.",
                    topic.name()
                ))))
            }
            Topic::VmStatus { vm_id } => match vm_view::get(&self.state.pool, vm_id).await? {
                Some(vm) if self.user.may_access(&vm.owner_id) => {}
                _ => return Err(Refusal::Api(ApiError::VmNotFound(vm_id.clone()))),
            },
            _ => {}
        }
        match topic {
            Topic::SystemEvent => {
                self.system_events = true;
                self.send(protocol::frame("subscribed", topic.to_json(), id))
                    .await?;
            }
            Topic::SystemMonitor { interval_ms } => {
                let mut tick = tokio::time::interval(Duration::from_millis(interval_ms));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut monitor = HostMonitor::new(self.state.settings.data_dir.clone());
                // Primes the rates; the first frame comes one interval later.
                monitor.sample();
                tick.tick().await;
                self.monitor = Some((monitor, tick, interval_ms));
                self.send(protocol::frame("subscribed", topic.to_json(), id))
                    .await?;
            }
            topic => {
                self.subs.retain(|s| !s.topic.same_as(&topic));
                if self.subs.len() >= MAX_SUBSCRIPTIONS {
                    return Err(Refusal::Api(ApiError::validation(
                        "data.topic",
                        format!("A connection may hold at most {MAX_SUBSCRIPTIONS} subscriptions."),
                    )));
                }
                let cursor = match since {
                    Some(since) => since,
                    None => feed::head(&self.state.pool).await?,
                };
                self.subs.push(LogSub { topic, cursor });
                let index = self.subs.len() - 1;
                let replayed = self.catch_up(index).await?;
                let sub = &self.subs[index];
                let mut data = sub.topic.to_json();
                data["since"] = json!(since);
                data["replayed"] = json!(replayed);
                data["position"] = json!(sub.cursor);
                self.send(protocol::frame("subscribed", data, id)).await?;
            }
        }
        Ok(())
    }

    fn unsubscribe(&mut self, topic: &Topic) -> Value {
        let before = self.subs.len();
        self.subs.retain(|s| !s.topic.same_as(topic));
        let mut removed = before - self.subs.len();
        match topic {
            Topic::SystemEvent if self.system_events => {
                self.system_events = false;
                removed += 1;
            }
            Topic::SystemMonitor { .. } if self.monitor.is_some() => {
                self.monitor = None;
                removed += 1;
            }
            _ => {}
        }
        let mut data = topic.to_json();
        data["removed"] = json!(removed);
        data
    }

    /// Sends what the log holds after subscription `index`'s cursor; returns how many frames.
    async fn catch_up(&mut self, index: usize) -> Result<u64, Refusal> {
        let scope = feed::Scope {
            vm_id: match &self.subs[index].topic {
                Topic::VmStatus { vm_id } => Some(vm_id.clone()),
                _ => None,
            },
            owner_id: (!self.user.is_admin()).then(|| self.user.id.clone()),
        };
        let mut sent = 0;
        loop {
            let cursor = self.subs[index].cursor;
            let rows = feed::after(&self.state.pool, cursor, REPLAY_PAGE, &scope).await?;
            let full = rows.len() == REPLAY_PAGE as usize;
            for row in &rows {
                let event = FeedEvent::from_row(row);
                self.subs[index].cursor = event.position;
                if let Some(frame) = self.frame_for(&self.subs[index].topic, &event) {
                    self.send_at(frame, Some(event.position)).await?;
                    sent += 1;
                }
            }
            if !full {
                return Ok(sent);
            }
        }
    }

    async fn catch_up_all(&mut self) -> Result<(), End> {
        for index in 0..self.subs.len() {
            match self.catch_up(index).await {
                Ok(_) => {}
                Err(Refusal::End(end)) => return Err(end),
                Err(Refusal::Api(e)) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "a connection could not catch up from the log");
                    return Err(End::Close(
                        CloseCode::Error,
                        "the event log could not be read; resume later".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn visible(&self, event: &FeedEvent) -> bool {
        self.user.is_admin() || event.owner_id.as_deref() == Some(self.user.id.as_str())
    }

    fn frame_for(&self, topic: &Topic, event: &FeedEvent) -> Option<ByteString> {
        frame_for_static(&self.state, topic, event)
    }

    async fn on_event(&mut self, event: &FeedEvent) -> Result<(), End> {
        let visible = self.visible(event);
        let mut status_sent = false;
        let mut frames = Vec::new();
        for sub in &mut self.subs {
            if event.position <= sub.cursor {
                continue;
            }
            sub.cursor = event.position;
            if !visible {
                continue;
            }
            let is_status = matches!(sub.topic, Topic::VmStatus { .. } | Topic::VmStatusAll);
            if is_status && status_sent {
                continue;
            }
            if let Some(frame) = frame_for_static(&self.state, &sub.topic, event) {
                status_sent |= is_status;
                frames.push(frame);
            }
        }
        for frame in frames {
            self.send_at(frame, Some(event.position)).await?;
        }
        Ok(())
    }

    async fn on_system(&mut self, event: &SystemEvent) -> Result<(), End> {
        if !self.system_events {
            return Ok(());
        }
        self.send(protocol::frame("system-event", json!(event), &Value::Null))
            .await
    }

    async fn on_monitor_tick(&mut self) -> Result<(), End> {
        let Some((monitor, _, interval)) = self.monitor.as_mut() else {
            return Ok(());
        };
        let mut data = json!(monitor.sample());
        data["interval"] = json!(interval);
        self.send(protocol::frame("system-monitor", data, &Value::Null))
            .await
    }

    /// Usage figures of the running VMs this connection follows (not from the log: no position).
    async fn on_usage_tick(&mut self) -> Result<(), End> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let all = self
            .subs
            .iter()
            .any(|s| matches!(s.topic, Topic::VmStatusAll));
        let board = self.state.usage.snapshot();
        let mut frames = Vec::new();
        for (vm_id, sample) in board.iter() {
            let followed = all
                || self
                    .subs
                    .iter()
                    .any(|s| matches!(&s.topic, Topic::VmStatus { vm_id: v } if v == vm_id));
            if followed && self.user.may_access(&sample.owner_id) {
                frames.push(protocol::frame(
                    "vm-status",
                    json!({
                        "vmId": vm_id,
                        "status": "running",
                        "usage": sample.usage,
                        "sampledAt": sample.at,
                    }),
                    &Value::Null,
                ));
            }
        }
        for frame in frames {
            self.send(frame).await?;
        }
        Ok(())
    }

    /// `vm-control`: the lifecycle use case REST shares, answered with `vm-control-response`.
    async fn control(&self, vm_id: &str, verb: Verb, params: Params) -> Result<Value, ApiError> {
        let span = tracing::info_span!("ws_vm_control", user_id = %self.user.id, vm_id, action = verb.name(), job_id = tracing::field::Empty);
        let state = &self.state;
        let accepted = async {
            let action = Action::parse(verb, params, &state.settings)?;
            lifecycle::request(state, &self.user, vm_id, action, Via::WebSocket, |_| {
                Conditions::default()
            })
            .await
        }
        .instrument(span)
        .await
        .map_err(control_error)?;
        let data = Accepted {
            job_id: accepted.job_id,
            vm_id: accepted.vm_id,
            status: accepted.status,
        };
        let mut data = serde_json::to_value(data).map_err(anyhow::Error::from)?;
        data["action"] = json!(verb.name());
        Ok(data)
    }
}

/// A refused `vm-control` as its error frame: the fields it names are the frame's (`data.*`).
fn control_error(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::TimeoutTooLong { max } => ApiError::validation(
            "data.timeout",
            format!("`timeout` must be at most {max} seconds."),
        ),
        other => other.into(),
    }
}

/// The frame `topic` gets for `event`.
fn frame_for_static(state: &AppState, topic: &Topic, event: &FeedEvent) -> Option<ByteString> {
    match topic {
        Topic::VmStatus { vm_id } if *vm_id != event.vm_id => None,
        Topic::VmStatus { .. } | Topic::VmStatusAll => Some(protocol::status_frame(event, || {
            state
                .usage
                .get(&event.vm_id)
                .map(|sample| json!(sample.usage))
        })),
        Topic::Jobs => protocol::job_frame(event),
        Topic::SystemEvent | Topic::SystemMonitor { .. } => None,
    }
}

async fn monitor_tick(monitor: &mut Option<(HostMonitor, tokio::time::Interval, u64)>) {
    match monitor {
        Some((_, tick, _)) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// A subscription refused (answered with an error frame) or a connection ended while replaying.
enum Refusal {
    Api(ApiError),
    End(End),
}

impl From<End> for Refusal {
    fn from(end: End) -> Self {
        Refusal::End(end)
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        Refusal::Api(e.into())
    }
}
