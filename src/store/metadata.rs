//! What the log records beside each event: who acted, how, from where, in which request, and the
//! job the event opens or closes (which the `jobs` trigger reads). Built on the server from the
//! authenticated request, never from anything the client sends about itself. The event store
//! adds `owner_id` and `status` (the VM's owner, and the status the event left it in), so the
//! real-time feed can filter and describe an event without replaying its stream.

use std::collections::HashMap;

use crate::vm::JobEffect;

/// How a command reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// The metadata map stored with one commit.
    pub fn to_map(&self, job: Option<JobEffect<'_>>) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor_id".to_string(), self.actor_id.clone()),
            ("actor_name".to_string(), self.actor_name.clone()),
            ("via".to_string(), self.via.as_str().to_string()),
        ]);
        if let Some(request_id) = &self.request_id {
            map.insert("request_id".into(), request_id.clone());
        }
        if let Some(addr) = &self.client_addr {
            map.insert("client_addr".into(), addr.clone());
        }
        match job {
            Some(JobEffect::Opens { job_id, operation }) => {
                map.insert("job_id".into(), job_id.to_string());
                map.insert("job_kind".into(), operation.as_str().to_string());
            }
            Some(JobEffect::Closes {
                job_id,
                outcome,
                error,
            }) => {
                map.insert("job_id".into(), job_id.to_string());
                map.insert("job_outcome".into(), outcome.as_str().to_string());
                if let Some(error) = error {
                    map.insert("job_error".into(), error.to_string());
                }
            }
            Some(JobEffect::Concerns { job_id }) => {
                map.insert("job_id".into(), job_id.to_string());
            }
            None => {}
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::{JobOutcome, Operation};

    #[test]
    fn an_opening_event_names_its_job_and_kind() {
        let meta = CommandMeta::system("reconcile");
        let map = meta.to_map(Some(JobEffect::Opens {
            job_id: "job-1",
            operation: Operation::Stop,
        }));
        assert_eq!(map["job_id"], "job-1");
        assert_eq!(map["job_kind"], "stop");
        assert!(!map.contains_key("job_outcome"));
        assert_eq!(map["via"], "system");
    }

    #[test]
    fn a_closing_event_names_its_outcome_and_error() {
        let meta = CommandMeta::system("worker");
        let map = meta.to_map(Some(JobEffect::Closes {
            job_id: "job-1",
            outcome: JobOutcome::Failed,
            error: Some("boom"),
        }));
        assert_eq!(map["job_outcome"], "failed");
        assert_eq!(map["job_error"], "boom");
        assert!(!map.contains_key("job_kind"));
    }
}
