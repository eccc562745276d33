//! What a command may carry besides itself: an `If-Match` precondition on the VM's version, the
//! idempotency key it was sent with, and how to build the answer its client gets. The VM's actor
//! checks the precondition and the key in the same decision as the command, and the repository
//! stores the answer in the command's own transaction, so a retry can be given it again.

use std::sync::Arc;

use serde_json::Value;

use super::jobs::JobRow;
use super::StoreError;
use crate::vm::Vm;

/// An `If-Match` precondition: the command applies only to one of these versions of the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: any version of a VM that exists.
    Any,
    /// One or more strong entity tags, each a version of the VM's stream.
    Versions(Vec<usize>),
}

impl IfMatch {
    pub fn admits(&self, version: usize) -> bool {
        match self {
            IfMatch::Any => version > 0,
            IfMatch::Versions(versions) => versions.contains(&version),
        }
    }
}

/// A request sent with an `Idempotency-Key`: whose key it is, and a hash of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRequest {
    pub user_id: String,
    pub key: String,
    pub request_hash: Vec<u8>,
}

/// The answer a client got: its HTTP status and JSON body, exactly as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// What an answer is built from: the state after the command, read inside its transaction.
pub struct AnswerInput<'a> {
    pub vm: &'a Vm,
    pub version: usize,
    /// The job the command's events open or close, when the answer asked for it.
    pub job: Option<JobRow>,
    /// When the VM's row was made and last changed.
    pub stamps: super::record::Stamps,
}

type Build = dyn Fn(&AnswerInput<'_>) -> Result<StoredAnswer, StoreError> + Send + Sync;

/// How to build a command's answer from the state it leaves.
#[derive(Clone)]
pub struct Answer {
    build: Arc<Build>,
    /// Whether the answer shows the job the command's events open or close.
    needs_job: bool,
}

impl Answer {
    pub fn new(
        needs_job: bool,
        build: impl Fn(&AnswerInput<'_>) -> Result<StoredAnswer, StoreError> + Send + Sync + 'static,
    ) -> Answer {
        Answer {
            build: Arc::new(build),
            needs_job,
        }
    }

    pub fn needs_job(&self) -> bool {
        self.needs_job
    }

    pub fn build(&self, input: &AnswerInput<'_>) -> Result<StoredAnswer, StoreError> {
        (self.build)(input)
    }
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("needs_job", &self.needs_job)
            .finish_non_exhaustive()
    }
}

/// Whose VM a command may act on: one that exists, is not deleted, and is owned by `owner` (any
/// owner when `None`). Decided by the VM's actor on the state it decides the command on, so the
/// API needs no read of its own before a command, and a VM deleted meanwhile is seen as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub owner: Option<String>,
}

impl Viewer {
    pub fn sees(&self, vm: &Vm) -> bool {
        vm.status
            .is_some_and(|status| status != crate::vm::VmStatus::Deleted)
            && self
                .owner
                .as_ref()
                .is_none_or(|owner| *owner == vm.owner.id)
    }
}

/// Everything a command carries besides itself; the default is none of it.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// The caller the VM must be visible to; `None` for commands that make the VM or come from
    /// the system itself.
    pub viewer: Option<Viewer>,
    pub if_match: Option<IfMatch>,
    pub key: Option<KeyedRequest>,
    /// Built when the command commits events; stored with `key` when there is one.
    pub answer: Option<Answer>,
    /// The owner's default quota, checked (with their overrides) in the commit's transaction
    /// when the VM is created or grows; `None` for owners without one.
    pub quota: Option<crate::accounts::Quota>,
    /// Cloud-init secrets the command sets, written outside the event log in its transaction.
    pub secrets: Option<crate::vm::CloudInitSecrets>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_star_admits_any_existing_version_only() {
        assert!(IfMatch::Any.admits(7));
        assert!(!IfMatch::Any.admits(0));
    }

    #[test]
    fn a_list_admits_only_its_versions() {
        let m = IfMatch::Versions(vec![3, 5]);
        assert!(m.admits(3) && m.admits(5));
        assert!(!m.admits(4));
    }
}
