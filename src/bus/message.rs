//! What an event looks like on NATS and inside the process: the audit log's JSON entry
//! (`GET /events`) plus its owner, the status the event left the VM in, and the job change it
//! made. The feed carries the VM streams and the image streams. The relay writes it
//! ([`Outgoing`]); the hub reads it back and the WebSocket replay makes the same from the log
//! ([`FeedEvent::from_row`]), so a frame is the same whether it came live or from the log.

use std::sync::{Arc, OnceLock};

use bytestring::ByteString;

use serde_json::{json, Value};

use crate::store::feed::FeedRow;
use crate::store::jobs::{JobKind, JobStatus};
use crate::store::EventMetadata;
use crate::vm::{JobOutcome, VmStatus};

/// The kind of stream an event on the feed belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStream {
    Vm,
    Image,
}

impl FeedStream {
    /// The stream type as the log stores it (`events.aggregate_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            FeedStream::Vm => "vm",
            FeedStream::Image => "image",
        }
    }

    pub fn parse(s: &str) -> Option<FeedStream> {
        [FeedStream::Vm, FeedStream::Image]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A job was queued or ended by an event.
#[derive(Debug, Clone, PartialEq)]
pub struct JobChange {
    pub job_id: String,
    /// `Queued`, or the outcome: `Succeeded`, `Failed`, `Cancelled`.
    pub status: JobStatus,
    /// Set when the event queued the job.
    pub kind: Option<JobKind>,
    pub error: Option<String>,
}

impl JobChange {
    fn from_metadata(m: &EventMetadata) -> Option<JobChange> {
        let job_id = m.job_id.clone()?;
        if let Some(kind) = m.job_kind {
            return Some(JobChange {
                job_id,
                status: JobStatus::Queued,
                kind: Some(kind),
                error: None,
            });
        }
        m.job_outcome.map(|outcome| JobChange {
            job_id,
            status: ended(outcome),
            kind: None,
            error: m.job_error.clone(),
        })
    }

    /// The job message of the event at `position` of a stream (`schemas/feed/job-update.json`):
    /// a VM's job names its VM, an image import its image, as `GET /jobs/{id}` does.
    pub fn to_json(&self, position: i64, stream: FeedStream, stream_id: &str) -> Value {
        let (vm_id, image) = match stream {
            FeedStream::Vm => (Some(stream_id), None),
            FeedStream::Image => (None, Some(stream_id)),
        };
        json!({
            "position": position,
            "jobId": self.job_id,
            "vmId": vm_id,
            "image": image,
            "kind": self.kind.map(JobKind::as_str),
            "status": self.status.as_str(),
            "error": self.error,
        })
    }
}

/// The job status an outcome leaves.
fn ended(outcome: JobOutcome) -> JobStatus {
    match outcome {
        JobOutcome::Succeeded => JobStatus::Succeeded,
        JobOutcome::Failed => JobStatus::Failed,
        JobOutcome::Cancelled => JobStatus::Cancelled,
    }
}

/// One committed event, as the feed carries it.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub position: i64,
    pub stream: FeedStream,
    /// The VM's id, or the image's name.
    pub stream_id: String,
    /// The VM's owner, or the user who asked for the image.
    pub owner_id: Option<String>,
    pub event_type: String,
    pub status: Option<VmStatus>,
    pub job: Option<JobChange>,
    /// The wire JSON (shared: one event goes to many connections).
    pub body: Arc<Value>,
    /// The WebSocket frames made from this event, shared by every connection it goes to.
    pub frames: Arc<FrameCache>,
}

/// Frames rendered once per event rather than once per connection: with 1,000 subscribers an
/// event is serialised once. What goes in is decided where frames are made (`ws::protocol`).
#[derive(Debug, Default)]
pub struct FrameCache {
    pub status: OnceLock<ByteString>,
    pub job: OnceLock<Option<ByteString>>,
    pub image: OnceLock<ByteString>,
}

/// An event as the relay sends it: what routes it, and its wire JSON written straight from its
/// row. The JSON is [`FeedEvent::from_row`]'s body (both are [`Wire`]; what
/// [`FeedEvent::from_bytes`] reads back), without a JSON tree built, printed and dropped per event: those were about half of the
/// relay's time under command load (`perf` over `benches/command_load.rs`).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub position: i64,
    pub stream: FeedStream,
    /// The VM's id, or the image's name.
    pub stream_id: String,
    pub event_type: String,
    pub job: Option<JobChange>,
    /// The wire JSON.
    pub bytes: bytes::Bytes,
}

/// The wire JSON of an event: its audit entry, then who owns it, the status it left and the job
/// it changed.
#[derive(serde::Serialize)]
struct Wire<'a> {
    #[serde(flatten)]
    entry: crate::store::audit::AuditEntry,
    owner: Option<&'a str>,
    status: Option<&'static str>,
    job: Option<WireJob<'a>>,
}

/// The job an event changed, as its wire JSON names it.
#[derive(serde::Serialize)]
struct WireJob<'a> {
    id: &'a str,
    kind: Option<&'static str>,
    status: &'static str,
    error: Option<&'a str>,
}

impl<'a> Wire<'a> {
    fn of(row: &'a FeedRow, job: Option<&'a JobChange>) -> Wire<'a> {
        Wire {
            entry: row.row.entry(),
            owner: row.owner_id.as_deref(),
            status: row.row.metadata.status.map(VmStatus::as_str),
            job: job.map(WireJob::of),
        }
    }
}

impl<'a> WireJob<'a> {
    fn of(job: &'a JobChange) -> WireJob<'a> {
        WireJob {
            id: &job.job_id,
            kind: job.kind.map(JobKind::as_str),
            status: job.status.as_str(),
            error: job.error.as_deref(),
        }
    }
}

impl Outgoing {
    /// The event of a row the relay read (a VM or an image stream's; see `store::feed`).
    pub fn from_row(row: &FeedRow) -> Result<Outgoing, NotAnEvent> {
        let stream = FeedStream::parse(&row.row.aggregate_type)
            .ok_or(NotAnEvent("not a VM or image stream"))?;
        let job = JobChange::from_metadata(&row.row.metadata);
        let bytes = serde_json::to_vec(&Wire::of(row, job.as_ref()))
            .map_err(|_| NotAnEvent("not writable as JSON"))?;
        Ok(Outgoing {
            position: row.row.position,
            stream,
            stream_id: row.row.aggregate_id.clone(),
            event_type: row.row.event_type.clone(),
            job,
            bytes: bytes.into(),
        })
    }

    /// The job message of this event (`schemas/feed/job-update.json`), if it changed a job.
    pub fn job_message(&self) -> Option<bytes::Bytes> {
        let job = self.job.as_ref()?;
        Some(
            job.to_json(self.position, self.stream, &self.stream_id)
                .to_string()
                .into(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the message is not a VoidVM event: {0}")]
pub struct NotAnEvent(&'static str);

impl FeedEvent {
    /// The event of a row the feed read (a VM or an image stream's; see `store::feed`).
    pub fn from_row(row: &FeedRow) -> Result<FeedEvent, NotAnEvent> {
        let stream = FeedStream::parse(&row.row.aggregate_type)
            .ok_or(NotAnEvent("not a VM or image stream"))?;
        let job = JobChange::from_metadata(&row.row.metadata);
        let status = row.row.metadata.status;
        let body = serde_json::to_value(Wire::of(row, job.as_ref()))
            .map_err(|_| NotAnEvent("not writable as JSON"))?;
        Ok(FeedEvent {
            position: row.row.position,
            stream,
            stream_id: row.row.aggregate_id.clone(),
            owner_id: row.owner_id.clone(),
            event_type: row.row.event_type.clone(),
            status,
            job,
            body: Arc::new(body),
            frames: Arc::default(),
        })
    }

    /// Reads back what [`Outgoing::from_row`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<FeedEvent, NotAnEvent> {
        let body: Value = serde_json::from_slice(bytes).map_err(|_| NotAnEvent("not JSON"))?;
        let text = |k: &str| body[k].as_str().map(str::to_string);
        let position = body["position"].as_i64().ok_or(NotAnEvent("no position"))?;
        let stream = body["streamType"]
            .as_str()
            .and_then(FeedStream::parse)
            .ok_or(NotAnEvent("no VM or image streamType"))?;
        let stream_id = text("streamId").ok_or(NotAnEvent("no streamId"))?;
        let event_type = text("type").ok_or(NotAnEvent("no type"))?;
        let job = match &body["job"] {
            Value::Object(j) => Some(JobChange {
                job_id: j
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(NotAnEvent("a job without id"))?
                    .to_string(),
                status: j
                    .get("status")
                    .and_then(Value::as_str)
                    .ok_or(NotAnEvent("a job without status"))
                    .and_then(|s| {
                        JobStatus::try_from(s.to_string())
                            .map_err(|_| NotAnEvent("a job with an unknown status"))
                    })?,
                kind: match j.get("kind").and_then(Value::as_str) {
                    Some(kind) => Some(
                        JobKind::try_from(kind.to_string())
                            .map_err(|_| NotAnEvent("a job of an unknown kind"))?,
                    ),
                    None => None,
                },
                error: j.get("error").and_then(Value::as_str).map(str::to_string),
            }),
            _ => None,
        };
        Ok(FeedEvent {
            position,
            owner_id: text("owner"),
            status: body["status"].as_str().and_then(VmStatus::parse),
            stream,
            stream_id,
            event_type,
            job,
            body: Arc::new(body),
            frames: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::audit::AuditRow;

    fn row(metadata: Value) -> FeedRow {
        FeedRow {
            row: AuditRow {
                position: 42,
                aggregate_type: "vm".into(),
                aggregate_id: "vm-1".into(),
                sequence: 3,
                event_type: "StartRequested".into(),
                version: "1".into(),
                payload: json!({"StartRequested": {"jobId": "job-1"}}),
                metadata: serde_json::from_value(metadata).expect("stored metadata reads"),
                recorded_at: chrono::Utc::now(),
                level: "info".into(),
            },
            owner_id: Some("user-1".into()),
        }
    }

    #[test]
    fn an_event_survives_the_wire() {
        let row = row(json!({
            "actor_id": "user-1", "actor_name": "ann", "via": "rest",
            "job_id": "job-1", "job_kind": "start", "status": "starting", "owner_id": "user-1"
        }));
        let sent = FeedEvent::from_row(&row).expect("a feed event");
        let wire = Outgoing::from_row(&row).expect("an outgoing event").bytes;
        let got = FeedEvent::from_bytes(&wire).expect("an event");
        assert_eq!(got.position, 42);
        assert_eq!(got.stream, FeedStream::Vm);
        assert_eq!(got.stream_id, "vm-1");
        assert_eq!(got.owner_id.as_deref(), Some("user-1"));
        assert_eq!(got.status, Some(VmStatus::Starting));
        assert_eq!(got.job, sent.job);
        assert_eq!(got.job.map(|j| j.status), Some(JobStatus::Queued));
        assert_eq!(*got.body, *sent.body);
        assert_eq!(
            sent.body["job"],
            json!({"id": "job-1", "kind": "start", "status": "queued", "error": null})
        );
        assert_eq!(sent.body["status"], "starting");
    }

    #[test]
    fn the_relays_wire_json_is_the_feed_events_body() {
        let mut image = row(json!({"job_id": "job-9", "job_kind": "import_image"}));
        image.row.aggregate_type = "image".into();
        image.row.aggregate_id = "debian".into();
        for row in [
            row(json!({
                "actor_id": "user-1", "actor_name": "ann", "via": "rest", "request_id": "r-1",
                "job_id": "job-1", "job_kind": "start", "status": "starting", "owner_id": "user-1"
            })),
            row(json!({"job_id": "job-1", "job_outcome": "failed", "job_error": "no disk"})),
            row(json!({"actor_id": "u"})),
            image,
        ] {
            let event = FeedEvent::from_row(&row).expect("a feed event");
            let out = Outgoing::from_row(&row).expect("an outgoing event");
            let wire: Value = serde_json::from_slice(&out.bytes).expect("JSON");
            assert_eq!(wire, *event.body);
            let back = FeedEvent::from_bytes(&out.bytes).expect("an event");
            assert_eq!(back.job, event.job);
            assert_eq!((out.position, out.stream), (event.position, event.stream));
            assert_eq!(out.stream_id, event.stream_id);
            assert_eq!(out.event_type, event.event_type);
            let message = out
                .job_message()
                .map(|m| serde_json::from_slice::<Value>(&m).expect("a job message is JSON"));
            let expected = event
                .job
                .as_ref()
                .map(|j| j.to_json(event.position, event.stream, &event.stream_id));
            assert_eq!(message, expected);
        }
    }

    #[test]
    fn an_outcome_closes_its_job() {
        let e = FeedEvent::from_row(&row(json!({
            "job_id": "job-1", "job_outcome": "failed", "job_error": "no disk"
        })))
        .expect("a feed event");
        let job = e.job.expect("a job change");
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.error.as_deref(), Some("no disk"));
    }

    #[test]
    fn an_event_without_a_job_has_no_job_change() {
        let e = FeedEvent::from_row(&row(json!({"actor_id": "u"}))).expect("a feed event");
        assert!(e.job.is_none());
        assert_eq!(e.body["job"], Value::Null);
    }

    #[test]
    fn an_image_event_names_its_image_and_its_import() {
        let mut image = row(json!({"job_id": "job-9", "job_kind": "import_image"}));
        image.row.aggregate_type = "image".into();
        image.row.aggregate_id = "debian".into();
        image.row.event_type = "ImageImportRequested".into();
        let sent = FeedEvent::from_row(&image).expect("a feed event");
        let wire = Outgoing::from_row(&image).expect("an outgoing event").bytes;
        let got = FeedEvent::from_bytes(&wire).expect("an event");
        assert_eq!(got.stream, FeedStream::Image);
        assert_eq!(got.stream_id, "debian");
        let job = got.job.clone().expect("the import's job");
        assert_eq!(job.kind, Some(JobKind::ImportImage));
        let message = job.to_json(got.position, got.stream, &got.stream_id);
        assert_eq!(message["image"], "debian");
        assert_eq!(message["vmId"], Value::Null);
        assert_eq!(message["kind"], "import_image");
        assert!(sent.body.get("vmId").is_none());
    }

    #[test]
    fn a_stream_that_is_not_on_the_feed_is_refused() {
        let mut user = row(json!({}));
        user.row.aggregate_type = "user".into();
        assert!(FeedEvent::from_row(&user).is_err());
    }

    #[test]
    fn a_foreign_message_is_refused() {
        assert!(FeedEvent::from_bytes(b"{\"hello\":1}").is_err());
        let unknown_job = json!({
            "position": 1, "streamType": "vm", "streamId": "vm-1", "type": "VmStarted",
            "job": {"id": "job-1", "status": "exploded"}
        });
        assert!(FeedEvent::from_bytes(unknown_job.to_string().as_bytes()).is_err());
        assert!(FeedEvent::from_bytes(b"nope").is_err());
    }
}
