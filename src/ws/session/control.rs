//! `vm-control`: a lifecycle verb sent over the socket, submitted as REST submits it.

use serde_json::{json, Value};
use tracing::Instrument;

use super::Connection;
use crate::api::error::ApiError;
use crate::store::Via;
use crate::vm::VmCommand;
use crate::ws::protocol::Action;

impl Connection {
    pub(super) async fn control(&self, vm_id: &str, action: Action) -> Result<Value, ApiError> {
        let span = tracing::info_span!("ws_vm_control", user_id = %self.user.id, vm_id, action = action.name(), job_id = tracing::field::Empty);
        let state = &self.state;
        let make = move |job_id: String| match action {
            Action::Start => VmCommand::Start { job_id },
            Action::Stop { force, timeout } => VmCommand::Stop {
                job_id,
                force,
                timeout: timeout.unwrap_or(state.settings.default_stop_timeout_secs),
            },
            Action::Restart => VmCommand::Restart { job_id },
            Action::Pause => VmCommand::Pause { job_id },
            Action::Resume => VmCommand::Resume { job_id },
            Action::Reset => VmCommand::Reset { job_id },
        };
        if let Action::Stop {
            timeout: Some(t), ..
        } = action
        {
            if t > state.settings.limits.stop_timeout_max_secs {
                return Err(ApiError::validation(
                    "data.timeout",
                    format!(
                        "`timeout` must be at most {} seconds.",
                        state.settings.limits.stop_timeout_max_secs
                    ),
                ));
            }
        }
        let accepted = crate::api::vms::submit(state, &self.user, vm_id, Via::WebSocket, make)
            .instrument(span)
            .await?;
        let mut data = serde_json::to_value(accepted).map_err(anyhow::Error::from)?;
        data["action"] = json!(action.name());
        Ok(data)
    }
}
