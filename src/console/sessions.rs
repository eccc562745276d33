//! A console session in the log: `ConsoleOpened` is decided by the VM's actor before the viewer
//! gets a byte (so a VM that is not the caller's, or not running, is refused there, on the state
//! the actor holds), and `ConsoleClosed` is recorded when the session ends, however it ends (the
//! viewer's close, a dropped TCP connection, the machine stopping). A server that dies with
//! consoles open leaves their opens unmatched.

use crate::actors::{ActorError, VmRegistry};
use crate::auth::{AuthUser, ID_ALPHABET};
use crate::store::conditions::Conditions;
use crate::store::{CommandMeta, Via};
use crate::vm::{ConsoleKind, VmCommand};

/// An open console session, recorded as `ConsoleOpened`; [`ConsoleSession::close`] records its
/// end.
pub struct ConsoleSession {
    pub vm_id: String,
    pub kind: ConsoleKind,
    pub id: String,
    meta: CommandMeta,
    registry: VmRegistry,
}

/// A new session id (`con-` and 16 characters).
pub fn new_session_id() -> String {
    format!("con-{}", nanoid::nanoid!(16, &ID_ALPHABET))
}

impl ConsoleSession {
    /// Records that `user` opens console `kind` of `vm_id`: refused unless the VM is visible to
    /// them and running.
    pub async fn open(
        registry: &VmRegistry,
        user: &AuthUser,
        vm_id: &str,
        kind: ConsoleKind,
        via: Via,
    ) -> Result<ConsoleSession, ActorError> {
        let id = new_session_id();
        let meta = user.meta(via);
        let conditions = Conditions {
            viewer: Some(user.viewer()),
            ..Conditions::default()
        };
        let command = VmCommand::OpenConsole {
            console: kind,
            session_id: id.clone(),
        };
        registry
            .execute_with(vm_id, command, meta.clone(), conditions)
            .await?;
        tracing::info!(vm_id, console = %kind, session_id = id, "console opened");
        Ok(ConsoleSession {
            vm_id: vm_id.to_string(),
            kind,
            id,
            meta,
            registry: registry.clone(),
        })
    }

    /// Records the session's end.
    pub async fn close(self) {
        let command = VmCommand::CloseConsole {
            console: self.kind,
            session_id: self.id.clone(),
        };
        match self.registry.execute(&self.vm_id, command, self.meta).await {
            Ok(_) => {
                tracing::info!(vm_id = self.vm_id, console = %self.kind, session_id = self.id, "console closed")
            }
            Err(e) => tracing::warn!(
                vm_id = self.vm_id,
                session_id = self.id,
                error = %crate::telemetry::chain(&e),
                "the end of a console session could not be recorded"
            ),
        }
    }
}
