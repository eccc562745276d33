//! The event bus: committed events leave PostgreSQL for NATS (the relay) and come back from NATS
//! to this node's WebSocket connections (the hub). The event log stays the source of truth; NATS
//! carries it to whoever listens, and JetStream keeps a replayable, de-duplicated copy.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::Settings;
use crate::store::log_identity::LogId;

pub mod hub;
pub mod message;
pub mod ownership;
pub mod relay;
pub mod subjects;
pub mod system;

pub use hub::Hub;
pub use message::{FeedEvent, FeedStream};
pub use subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS at {url} could not be reached")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("the JetStream stream {stream} could not be set up")]
    Stream {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
}

/// What every part of the bus needs to find its way on NATS.
#[derive(Clone)]
pub struct Bus {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub subjects: Subjects,
    pub stream: String,
    /// The event log this node's database holds; the stream records which log it carries.
    pub log: LogId,
    retention: Duration,
}

impl Bus {
    /// Connects in the background: the server starts even while NATS is away, and the relay
    /// catches up once it is back.
    pub async fn connect(settings: &Settings, log: LogId) -> Result<Bus, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("voidvm")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((100 * 2u64.saturating_pow(attempts as u32)).min(2_000))
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS connection lost"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            })
            .connect(settings.nats_url.as_str())
            .await
            .map_err(|source| BusError::Connect {
                url: settings.nats_url.clone(),
                source,
            })?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .ack_timeout(Duration::from_secs(3))
            .build(client.clone());
        Ok(Bus {
            client,
            jetstream,
            subjects: Subjects::new(&settings.nats.prefix),
            stream: settings.nats.stream.clone(),
            log,
            retention: Duration::from_secs(settings.nats.retention_secs),
        })
    }

    /// Creates the stream holding the event and job subjects, labelled with this node's log,
    /// unless it exists (whose log an existing stream carries is `ownership`'s business).
    pub async fn ensure_stream(&self) -> Result<stream::Stream, BusError> {
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                description: Some(ownership::label(self.log)),
                subjects: vec![self.subjects.all_events(), self.subjects.all_jobs()],
                max_age: self.retention,
                duplicate_window: Duration::from_secs(120),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|source| BusError::Stream {
                stream: self.stream.clone(),
                source,
            })
    }
}
