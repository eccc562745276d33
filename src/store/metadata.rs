//! What the log records beside each event: who acted, how, from where, in which request, and the
//! job the event opens or closes (from which the job's row is written). Built on the server from
//! the authenticated request, never from anything the client sends about itself. The event store
//! adds `owner_id` and `status` (the VM's owner, and the status the event left it in), so the
//! real-time feed can filter and describe an event without replaying its stream.
//!
//! [`EventMetadata`] is the one shape of that record, written and read back by serde. Its JSON
//! keys are a contract: the `jobs` trigger for images (`migrations/`), the indexes and the SQL
//! filters of the audit log and the feed read them by name.

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::jobs::JobKind;
use crate::vm::{JobEffect, JobOutcome, VmStatus};

/// How a command reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Rest,
    WebSocket,
    /// VoidVM itself: a worker recording an outcome, the watcher, the reconciler.
    System,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::WebSocket => "websocket",
            Via::System => "system",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    pub actor_id: String,
    pub actor_name: String,
    pub via: Via,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

impl CommandMeta {
    /// VoidVM acting on its own (`actor_id` "system").
    pub fn system(reason: &str) -> CommandMeta {
        CommandMeta {
            actor_id: "system".to_string(),
            actor_name: reason.to_string(),
            via: Via::System,
            request_id: None,
            client_addr: None,
        }
    }

    /// The metadata stored with one commit: this command's origin, the job effect of the commit's
    /// first event, the VM's owner and the status the commit left it in.
    pub fn event_metadata(
        &self,
        job: Option<JobEffect<'_>>,
        owner_id: &str,
        status: Option<VmStatus>,
    ) -> EventMetadata {
        let mut metadata = EventMetadata {
            actor_id: Some(self.actor_id.clone()),
            actor_name: Some(self.actor_name.clone()),
            via: Some(self.via),
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
            owner_id: Some(owner_id.to_string()),
            status,
            ..EventMetadata::default()
        };
        match job {
            Some(JobEffect::Opens { job_id, operation }) => {
                metadata.job_id = Some(job_id.to_string());
                metadata.job_kind = Some(JobKind::Vm(operation));
            }
            Some(JobEffect::Closes {
                job_id,
                outcome,
                error,
            }) => {
                metadata.job_id = Some(job_id.to_string());
                metadata.job_outcome = Some(outcome);
                metadata.job_error = error.map(str::to_string);
            }
            Some(JobEffect::Concerns { job_id }) => {
                metadata.job_id = Some(job_id.to_string());
            }
            None => {}
        }
        metadata
    }
}

/// The metadata of one stored event (the `events.metadata` jsonb column).
///
/// Every field is optional and absent keys are left out, as before this type existed. Reading is
/// lenient, so that events written by any earlier version still read: a missing key is `None`,
/// an unknown key is ignored, and a value that is not one this version knows (a kind, outcome,
/// status or channel it has no variant for) reads as `None` rather than failing the read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventMetadata {
    /// The user who acted (`system` for VoidVM itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<String>,
    /// Their user name, or what part of VoidVM acted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "known_or_none"
    )]
    pub via: Option<Via>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// The job the event opens, closes or concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Set when the event opens its job (its row is inserted then: `super::record` for a VM,
    /// the `jobs` trigger for an image).
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "known_or_none"
    )]
    pub job_kind: Option<JobKind>,
    /// Set when the event closes its job.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "known_or_none"
    )]
    pub job_outcome: Option<JobOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_error: Option<String>,
    /// The VM's owner (absent on events recorded before owners were written here).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    /// The status the commit left the VM in.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "known_or_none"
    )]
    pub status: Option<VmStatus>,
}

/// A typed value, or `None` for a value this version does not know (see [`EventMetadata`]).
fn known_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Operation;
    use serde_json::json;

    fn stored(metadata: &EventMetadata) -> Value {
        serde_json::to_value(metadata).expect("metadata serialises")
    }

    #[test]
    fn an_opening_event_names_its_job_and_kind() {
        let meta = CommandMeta::system("reconcile");
        let metadata = meta.event_metadata(
            Some(JobEffect::Opens {
                job_id: "job-1",
                operation: Operation::Stop,
            }),
            "user-1",
            Some(VmStatus::Stopping),
        );
        assert_eq!(
            stored(&metadata),
            json!({
                "actor_id": "system", "actor_name": "reconcile", "via": "system",
                "job_id": "job-1", "job_kind": "stop",
                "owner_id": "user-1", "status": "stopping"
            })
        );
    }

    #[test]
    fn a_closing_event_names_its_outcome_and_error() {
        let meta = CommandMeta {
            actor_id: "user-1".into(),
            actor_name: "ann".into(),
            via: Via::WebSocket,
            request_id: Some("req-1".into()),
            client_addr: Some("10.0.0.1".into()),
        };
        let metadata = meta.event_metadata(
            Some(JobEffect::Closes {
                job_id: "job-1",
                outcome: JobOutcome::Failed,
                error: Some("boom"),
            }),
            "user-1",
            None,
        );
        assert_eq!(
            stored(&metadata),
            json!({
                "actor_id": "user-1", "actor_name": "ann", "via": "websocket",
                "request_id": "req-1", "client_addr": "10.0.0.1",
                "job_id": "job-1", "job_outcome": "failed", "job_error": "boom",
                "owner_id": "user-1"
            })
        );
    }

    #[test]
    fn metadata_reads_back_as_written() {
        let meta = CommandMeta {
            actor_id: "user-1".into(),
            actor_name: "ann".into(),
            via: Via::Rest,
            request_id: Some("req-1".into()),
            client_addr: None,
        };
        for job in [
            None,
            Some(JobEffect::Opens {
                job_id: "job-1",
                operation: Operation::Restart,
            }),
            Some(JobEffect::Closes {
                job_id: "job-1",
                outcome: JobOutcome::Cancelled,
                error: None,
            }),
            Some(JobEffect::Concerns { job_id: "job-1" }),
        ] {
            let written = meta.event_metadata(job, "user-1", Some(VmStatus::Rebooting));
            let read: EventMetadata =
                serde_json::from_value(stored(&written)).expect("metadata reads back");
            assert_eq!(read, written);
        }
    }

    #[test]
    fn metadata_of_older_versions_still_reads() {
        // As stored before owners and statuses were recorded, with a key no longer written and
        // values this version has no variant for.
        let old = json!({
            "actor_id": "user-1", "actor_name": "ann", "via": "carrier-pigeon",
            "job_id": "job-1", "job_kind": "hibernate", "legacy_key": "x"
        });
        let read: EventMetadata = serde_json::from_value(old).expect("old metadata reads");
        assert_eq!(
            read,
            EventMetadata {
                actor_id: Some("user-1".into()),
                actor_name: Some("ann".into()),
                job_id: Some("job-1".into()),
                ..EventMetadata::default()
            }
        );
        let empty: EventMetadata = serde_json::from_value(json!({})).expect("empty metadata reads");
        assert_eq!(empty, EventMetadata::default());
    }
}
