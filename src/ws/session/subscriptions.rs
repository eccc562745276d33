//! A connection's subscriptions: subscribe, unsubscribe, and the replay from the log after a
//! subscription's cursor (`since`, or catching up after falling behind the hub). Live events at
//! or below a cursor are skipped by the fan-out, so replay and live events meet with no gap and
//! no duplicate.

use std::time::Duration;

use actix_ws::CloseCode;
use serde_json::{json, Value};

use super::{Connection, End};
use crate::api::error::ApiError;
use crate::bus::FeedEvent;
use crate::monitor::host::HostMonitor;
use crate::store::feed;
use crate::ws::protocol::{self, Topic};

/// Subscriptions a connection may hold.
const MAX_SUBSCRIPTIONS: usize = 64;
/// Events read from the log per query while replaying.
const REPLAY_PAGE: u32 = 500;

pub(super) struct LogSub {
    pub(super) topic: Topic,
    /// The last position this subscription has passed.
    pub(super) cursor: i64,
}

impl Connection {
    pub(super) async fn subscribe(
        &mut self,
        topic: Topic,
        since: Option<i64>,
        id: &Value,
    ) -> Result<(), Refusal> {
        self.user
            .require(topic.permission())
            .map_err(Refusal::Api)?;
        if let Topic::VmStatus { vm_id } = &topic {
            match crate::app::access::vm_row(&self.state, vm_id).await? {
                Some(vm) if self.user.may_access(&vm.owner_id) => {}
                _ => return Err(Refusal::Api(ApiError::VmNotFound(vm_id.clone()))),
            }
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
                let head = feed::head(&self.state.pool).await?;
                let cursor = match since {
                    // A position the log has not reached was never sent: following from it
                    // would skip every event until the log got there.
                    Some(since) if since > head => {
                        return Err(Refusal::Api(ApiError::validation(
                            "data.since",
                            format!(
                                "Position {since} is after the log's last ({head}); resume from a position a frame carried."
                            ),
                        )))
                    }
                    Some(since) => since,
                    None => head,
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

    pub(super) fn unsubscribe(&mut self, topic: &Topic) -> Value {
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
        let topic = &self.subs[index].topic;
        let scope = feed::Scope {
            streams: match topic {
                Topic::VmStatus { vm_id } => feed::Streams::Vm(vm_id.clone()),
                Topic::VmStatusAll => feed::Streams::Vms,
                Topic::Images => feed::Streams::Images,
                Topic::Jobs | Topic::SystemEvent | Topic::SystemMonitor { .. } => {
                    feed::Streams::All
                }
            },
            // Every image's events are for anyone who may read images (see `fanout`).
            owner_id: match topic {
                Topic::Images => None,
                _ => self.user.owner_filter(),
            },
        };
        let mut sent = 0;
        loop {
            let cursor = self.subs[index].cursor;
            let rows = feed::after(&self.state.pool, cursor, REPLAY_PAGE, &scope).await?;
            let full = rows.len() == REPLAY_PAGE as usize;
            for row in &rows {
                let event = FeedEvent::from_row(row).map_err(|e| {
                    Refusal::Api(ApiError::Unexpected(
                        anyhow::Error::new(e).context("the feed read an event it cannot send"),
                    ))
                })?;
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

    pub(super) async fn catch_up_all(&mut self) -> Result<(), End> {
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
}

/// A subscription refused (answered with an error frame) or a connection ended while replaying.
pub(super) enum Refusal {
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
