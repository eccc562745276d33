//! The hub: this node's one subscription to the event stream, fanned out in-process to every
//! WebSocket connection.
//!
//! It follows the JetStream stream with an ordered consumer (which notices a missed message and
//! starts again from the last one it saw) and hands each event to a broadcast channel. Sending
//! never waits for a connection: a connection that falls behind the channel catches up from the
//! log on its own (see `ws::session`), so one slow reader never delays the others.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::message::{FeedEvent, NotAnEvent};
use super::ownership::{CheckError, StreamOwner};
use super::subjects::{LOG_HEADER, POSITION_HEADER};
use super::system::SystemEvent;
use super::Bus;

pub struct Hub {
    events: broadcast::Sender<Arc<FeedEvent>>,
    system: broadcast::Sender<Arc<SystemEvent>>,
    /// The highest position handed out (to drop a re-sent duplicate).
    last: AtomicI64,
}

impl Hub {
    pub fn new(capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            events: broadcast::channel(capacity).0,
            system: broadcast::channel(256).0,
            last: AtomicI64::new(0),
        })
    }

    pub fn events(&self) -> broadcast::Receiver<Arc<FeedEvent>> {
        self.events.subscribe()
    }

    pub fn system(&self) -> broadcast::Receiver<Arc<SystemEvent>> {
        self.system.subscribe()
    }

    /// Takes one message of this node's log (its position from its header, when it has one).
    /// Nobody listening, only the position is kept: the body is not decoded, so a node without
    /// WebSocket subscribers does not parse every event it relays (a connection that subscribes
    /// later reads what came before from the log, see `ws::session`).
    fn take(&self, position: Option<i64>, payload: &[u8]) -> Result<(), NotAnEvent> {
        if self.events.receiver_count() == 0 {
            if let Some(position) = position {
                self.last.fetch_max(position, Ordering::SeqCst);
            }
            return Ok(());
        }
        self.deliver(FeedEvent::from_bytes(payload)?);
        Ok(())
    }

    fn deliver(&self, event: FeedEvent) {
        let previous = self.last.fetch_max(event.position, Ordering::SeqCst);
        if event.position <= previous {
            tracing::debug!(
                position = event.position,
                "dropped an event already delivered"
            );
            return;
        }
        // No receivers is fine: nobody is listening.
        let _ = self.events.send(Arc::new(event));
    }

    /// Follows the stream (only while it carries this node's log) and the system subject until
    /// `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        bus: Bus,
        owner: Arc<StreamOwner>,
        shutdown: CancellationToken,
    ) {
        let events = self.clone().follow_events(bus.clone(), owner);
        let system = self.follow_system(bus);
        tokio::select! {
            () = events => {}
            () = system => {}
            () = shutdown.cancelled() => tracing::debug!("hub stopped"),
        }
    }

    async fn follow_events(self: Arc<Self>, bus: Bus, owner: Arc<StreamOwner>) {
        let mut next_sequence: Option<u64> = None;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.consume(&bus, &owner, &mut next_sequence).await {
                Ok(()) => delay = Duration::from_millis(100),
                // Another log's stream, or one ahead of ours: the owner check said so once.
                Err(e) if matches!(e.downcast_ref(), Some(CheckError::Conflict(_))) => {
                    tokio::time::sleep(super::relay::RECHECK).await;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(e.as_ref()), "the event feed from NATS stopped; following again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn consume(
        &self,
        bus: &Bus,
        owner: &StreamOwner,
        next_sequence: &mut Option<u64>,
    ) -> anyhow::Result<()> {
        let mut stream = owner.check().await?;
        let last_sequence = stream.info().await?.state.last_sequence;
        let start_sequence = match *next_sequence {
            // The same stream, where we left it.
            Some(sequence) if sequence <= last_sequence + 1 => sequence,
            // First start, or the stream was made anew (a reset): only what arrives from now on
            // (a connection reads older events from the log).
            _ => last_sequence + 1,
        };
        *next_sequence = Some(start_sequence);
        let deliver_policy = DeliverPolicy::ByStartSequence { start_sequence };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: bus.subjects.all_events(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let ours = bus.log.to_string();
        while let Some(message) = messages.next().await {
            let message = message?;
            let sequence = message
                .info()
                .map_err(|e| anyhow::anyhow!(e))?
                .stream_sequence;
            *next_sequence = Some(sequence + 1);
            let log = message.headers.as_ref().and_then(|h| h.get(LOG_HEADER));
            if log.is_some_and(|l| l.as_str() != ours) {
                tracing::debug!(subject = %message.subject, "skipped a message of another log");
                continue;
            }
            let position = message
                .headers
                .as_ref()
                .and_then(|h| h.get(POSITION_HEADER))
                .and_then(|p| p.as_str().parse().ok());
            if let Err(e) = self.take(position, &message.payload) {
                tracing::warn!(subject = %message.subject, error = %crate::telemetry::chain(&e), "skipped a message");
            }
        }
        Ok(())
    }

    async fn follow_system(self: Arc<Self>, bus: Bus) {
        loop {
            let mut subscriber = match bus.client.subscribe(bus.subjects.all_system()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "could not subscribe to system events");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(message) = subscriber.next().await {
                match serde_json::from_slice::<SystemEvent>(&message.payload) {
                    Ok(event) => {
                        let _ = self.system.send(Arc::new(event));
                    }
                    Err(e) => {
                        tracing::debug!(error = %crate::telemetry::chain(&e), "skipped a system message")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> Vec<u8> {
        serde_json::json!({
            "position": position, "streamType": "vm", "streamId": "vm-1",
            "type": "VmReconfigured", "owner": "user-1"
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn with_nobody_listening_a_message_is_not_decoded_but_its_position_is_kept() {
        let hub = Hub::new(8);
        // Not an event: decoding it would fail.
        assert!(hub.take(Some(7), b"not JSON").is_ok());
        assert_eq!(hub.last.load(Ordering::SeqCst), 7);
        // What a later listener is handed starts after it.
        let mut listener = hub.events();
        assert!(hub.take(Some(7), &event(7)).is_ok());
        assert!(listener.try_recv().is_err(), "a position already taken");
    }

    #[test]
    fn a_listener_is_handed_each_event_once_and_a_message_that_is_no_event_is_refused() {
        let hub = Hub::new(8);
        let mut listener = hub.events();
        assert!(hub.take(Some(7), b"not JSON").is_err());
        assert!(hub.take(Some(42), &event(42)).is_ok());
        assert!(hub.take(Some(42), &event(42)).is_ok());
        let got = listener.try_recv().expect("the event");
        assert_eq!((got.position, got.stream_id.as_str()), (42, "vm-1"));
        assert!(listener.try_recv().is_err(), "a duplicate was handed out");
    }
}
