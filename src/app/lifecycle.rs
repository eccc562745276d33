//! The lifecycle use case REST (`POST /vms/{id}/<verb>`, `DELETE /vms/{id}`) and WebSocket
//! (`vm-control`) share: one typed parser from a verb and its parameters to an [`Action`] (the
//! stop timeout's default and bound come from the settings), and one path to the VM's actor,
//! which records the command and opens its job. Each front end keeps its own answer shape and
//! maps [`LifecycleError`] to its own errors.

use super::ids::new_job_id;
use super::AppState;
use crate::actors::ActorError;
use crate::auth::{AuthUser, Permission};
use crate::config::Settings;
use crate::store::conditions::{Conditions, StoredAnswer};
use crate::store::Via;
use crate::vm::{VmCommand, VmStatus};

/// A verb a client names: the path of `POST /vms/{id}/<verb>`, or `action` in `vm-control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Start,
    Stop,
    Restart,
    Pause,
    Resume,
    Reset,
}

impl Verb {
    pub const ALL: [Verb; 6] = [
        Verb::Start,
        Verb::Stop,
        Verb::Restart,
        Verb::Pause,
        Verb::Resume,
        Verb::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Reset => "reset",
        }
    }

    /// The verb of this name, if there is one.
    pub fn from_name(name: &str) -> Option<Verb> {
        Verb::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// The parameters a verb may carry, as the client sent them (only `stop` reads them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Params {
    /// Stop at once instead of asking the guest (ACPI) first.
    pub force: Option<bool>,
    /// Seconds to wait for the guest before forcing (default from the settings).
    pub timeout: Option<u64>,
}

/// A lifecycle command, checked and completed with the settings' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop {
        force: bool,
        timeout: u64,
    },
    Restart,
    Pause,
    Resume,
    Reset,
    /// The VM and its disk go (REST `DELETE /vms/{id}` only).
    Delete,
}

impl Action {
    /// The permission the action needs.
    pub fn permission(&self) -> Permission {
        match self {
            Action::Start => Permission::VmStart,
            Action::Stop { .. } => Permission::VmStop,
            Action::Restart => Permission::VmRestart,
            Action::Pause => Permission::VmPause,
            Action::Resume => Permission::VmResume,
            Action::Reset => Permission::VmReset,
            Action::Delete => Permission::VmDelete,
        }
    }

    /// The one parser of a verb and its parameters. Parameters a verb does not take are ignored.
    pub fn parse(
        verb: Verb,
        params: Params,
        settings: &Settings,
    ) -> Result<Action, LifecycleError> {
        Ok(match verb {
            Verb::Start => Action::Start,
            Verb::Stop => {
                let max = settings.limits.stop_timeout_max_secs;
                if params.timeout.is_some_and(|t| t > max) {
                    return Err(LifecycleError::TimeoutTooLong { max });
                }
                Action::Stop {
                    force: params.force.unwrap_or(false),
                    timeout: params.timeout.unwrap_or(settings.default_stop_timeout_secs),
                }
            }
            Verb::Restart => Action::Restart,
            Verb::Pause => Action::Pause,
            Verb::Resume => Action::Resume,
            Verb::Reset => Action::Reset,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop { .. } => "stop",
            Action::Restart => "restart",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Reset => "reset",
            Action::Delete => "delete",
        }
    }

    fn command(self, job_id: String) -> VmCommand {
        match self {
            Action::Start => VmCommand::Start { job_id },
            Action::Stop { force, timeout } => VmCommand::Stop {
                job_id,
                force,
                timeout,
            },
            Action::Restart => VmCommand::Restart { job_id },
            Action::Pause => VmCommand::Pause { job_id },
            Action::Resume => VmCommand::Resume { job_id },
            Action::Reset => VmCommand::Reset { job_id },
            Action::Delete => VmCommand::Delete { job_id },
        }
    }
}

/// The job a request opens, known before the command is sent (a front end builds its answer,
/// recorded in the command's transaction, from it).
#[derive(Debug, Clone)]
pub struct Ticket {
    pub job_id: String,
    pub vm_id: String,
}

/// A lifecycle command recorded: its job runs it.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub job_id: String,
    pub vm_id: String,
    /// The VM's status once the command was recorded (e.g. `starting`).
    pub status: Option<VmStatus>,
    /// The answer built in the command's transaction, when the conditions asked for one.
    pub answer: Option<StoredAnswer>,
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// A stop timeout above the settings' bound.
    #[error("the stop timeout must be at most {max} seconds")]
    TimeoutTooLong { max: u64 },
    /// The user's role does not grant the action's permission.
    #[error("the role '{role}' does not grant '{permission}'")]
    Denied {
        permission: Permission,
        role: String,
    },
    /// The VM's actor refused or failed the command.
    #[error("virtual machine {vm_id}: {source}")]
    Actor {
        vm_id: String,
        #[source]
        source: ActorError,
    },
}

/// Sends `action` on `vm_id` for `user` to the VM's actor, with the conditions the front end
/// builds for the request's job (`If-Match`, idempotency key, answer; none over WebSocket).
pub async fn request(
    state: &AppState,
    user: &AuthUser,
    vm_id: &str,
    action: Action,
    via: Via,
    conditions: impl FnOnce(&Ticket) -> Conditions,
) -> Result<Accepted, LifecycleError> {
    let permission = action.permission();
    if !user.may(permission) {
        return Err(LifecycleError::Denied {
            permission,
            role: user.role.id.clone(),
        });
    }
    let ticket = Ticket {
        job_id: new_job_id(),
        vm_id: vm_id.to_string(),
    };
    tracing::Span::current().record("job_id", ticket.job_id.as_str());
    // Whether the VM is the caller's (and not deleted) is decided by its actor, on the state the
    // command is decided on: no read of the list first.
    let conditions = Conditions {
        viewer: Some(user.viewer()),
        ..conditions(&ticket)
    };
    let committed = state
        .registry
        .execute_with(
            vm_id,
            action.command(ticket.job_id.clone()),
            user.meta(via),
            conditions,
        )
        .await
        .map_err(|source| LifecycleError::Actor {
            vm_id: vm_id.to_string(),
            source,
        })?;
    Ok(Accepted {
        job_id: ticket.job_id,
        vm_id: ticket.vm_id,
        status: committed.vm.status,
        answer: committed.answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let mut s = Settings {
            default_stop_timeout_secs: 30,
            ..Settings::default()
        };
        s.limits.stop_timeout_max_secs = 600;
        s
    }

    #[test]
    fn every_verb_is_found_by_its_name_and_delete_is_not_one() {
        for verb in Verb::ALL {
            assert_eq!(Verb::from_name(verb.name()), Some(verb));
        }
        assert_eq!(Verb::from_name("delete"), None);
        assert_eq!(Verb::from_name("Start"), None);
    }

    #[test]
    fn a_stop_takes_its_defaults_from_the_settings() {
        let action = Action::parse(Verb::Stop, Params::default(), &settings()).ok();
        assert_eq!(
            action,
            Some(Action::Stop {
                force: false,
                timeout: 30
            })
        );
        let params = Params {
            force: Some(true),
            timeout: Some(600),
        };
        assert_eq!(
            Action::parse(Verb::Stop, params, &settings()).ok(),
            Some(Action::Stop {
                force: true,
                timeout: 600
            })
        );
    }

    #[test]
    fn a_stop_timeout_above_the_bound_is_refused() {
        let params = Params {
            force: None,
            timeout: Some(601),
        };
        assert!(matches!(
            Action::parse(Verb::Stop, params, &settings()),
            Err(LifecycleError::TimeoutTooLong { max: 600 })
        ));
    }

    #[test]
    fn verbs_without_parameters_ignore_them() {
        let params = Params {
            force: Some(true),
            timeout: Some(10_000),
        };
        assert_eq!(
            Action::parse(Verb::Restart, params, &settings()).ok(),
            Some(Action::Restart)
        );
    }

    #[test]
    fn each_action_becomes_its_command_with_the_job() {
        let job = || "job-1".to_string();
        assert!(matches!(
            Action::Stop {
                force: true,
                timeout: 5
            }
            .command(job()),
            VmCommand::Stop { job_id, force: true, timeout: 5 } if job_id == "job-1"
        ));
        assert!(matches!(
            Action::Delete.command(job()),
            VmCommand::Delete { .. }
        ));
        assert!(matches!(
            Action::Start.command(job()),
            VmCommand::Start { .. }
        ));
    }
}
