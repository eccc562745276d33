//! The NATS subject scheme, in one place so that every publisher and subscriber agrees and
//! another node or any NATS client can follow along.
//!
//! | subject | what | where |
//! |---|---|---|
//! | `<prefix>.events.<vmId>.<EventType>` | every committed VM event, in log order | JetStream |
//! | `<prefix>.events.image.<name>.<EventType>` | every committed image event (imports, progress) | JetStream |
//! | `<prefix>.jobs.<vmId>.<jobId>` | a job was queued or ended (derived from an event) | JetStream |
//! | `<prefix>.jobs.image.<name>.<jobId>` | an image import was queued or ended | JetStream |
//! | `<prefix>.system.<kind>` | node happenings: started, stopping, NATS lost/back | core NATS |
//!
//! So `<prefix>.events.vm-123.>` follows one VM, `<prefix>.events.*.VmCrashed` one VM event type,
//! `<prefix>.events.image.>` every image, and `<prefix>.jobs.>` every job. A VM id always starts
//! with `vm-`, so the token `image` never names a VM. Event and job messages carry `Nats-Msg-Id` (`e<position>`,
//! `j<position>`), so a re-sent message is dropped by JetStream's duplicate window, and a
//! `Voidvm-Position` header with the event's global position in the log, and a `Voidvm-Log` header
//! with the id of the log it comes from. The stream holds them in log order; an event's job
//! message comes just before it.

/// The header holding an event's global position.
pub const POSITION_HEADER: &str = "Voidvm-Position";
/// The header holding the id of the event log a message comes from.
pub const LOG_HEADER: &str = "Voidvm-Log";

#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_string(),
        }
    }

    pub fn event(&self, vm_id: &str, event_type: &str) -> String {
        format!(
            "{}.events.{}.{}",
            self.prefix,
            token(vm_id),
            token(event_type)
        )
    }

    pub fn image_event(&self, name: &str, event_type: &str) -> String {
        format!(
            "{}.events.image.{}.{}",
            self.prefix,
            token(name),
            token(event_type)
        )
    }

    pub fn job(&self, vm_id: &str, job_id: &str) -> String {
        format!("{}.jobs.{}.{}", self.prefix, token(vm_id), token(job_id))
    }

    pub fn image_job(&self, name: &str, job_id: &str) -> String {
        format!(
            "{}.jobs.image.{}.{}",
            self.prefix,
            token(name),
            token(job_id)
        )
    }

    pub fn system(&self, kind: &str) -> String {
        format!("{}.system.{}", self.prefix, token(kind))
    }

    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    pub fn all_jobs(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    pub fn all_system(&self) -> String {
        format!("{}.system.>", self.prefix)
    }
}

/// Is `s` usable as one subject token (and as a stream name)?
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Ids and type names are made by VoidVM and are already tokens; anything else is made one,
/// so a strange id can never widen or split a subject.
fn token(s: &str) -> String {
    if is_token(s) {
        s.to_string()
    } else {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_subject_names_the_vm_and_the_type() {
        let s = Subjects::new("voidvm");
        assert_eq!(
            s.event("vm-abc", "VmStarted"),
            "voidvm.events.vm-abc.VmStarted"
        );
        assert_eq!(s.job("vm-abc", "job-1"), "voidvm.jobs.vm-abc.job-1");
        assert_eq!(s.system("started"), "voidvm.system.started");
        assert_eq!(
            s.image_event("debian-12", "ImageImported"),
            "voidvm.events.image.debian-12.ImageImported"
        );
        assert_eq!(
            s.image_job("debian-12", "job-1"),
            "voidvm.jobs.image.debian-12.job-1"
        );
    }

    #[test]
    fn wildcards_and_dots_cannot_leak_into_a_subject() {
        let s = Subjects::new("voidvm");
        assert_eq!(s.event("a.b>*", "X"), "voidvm.events.a_b__.X");
    }

    #[test]
    fn a_prefix_must_be_one_token() {
        assert!(is_token("voidvm"));
        assert!(is_token("t_1-x"));
        assert!(!is_token("a.b"));
        assert!(!is_token(""));
        assert!(!is_token("a b"));
    }
}
