//! `vm-control`: a lifecycle verb sent over the socket, carried out by the lifecycle use case REST
//! shares (`app::lifecycle`), answered with `vm-control-response`.

use serde_json::{json, Value};
use tracing::Instrument;

use super::Connection;
use crate::api::answers::Accepted;
use crate::api::error::ApiError;
use crate::app::lifecycle::{self, Action, LifecycleError, Params, Verb};
use crate::store::conditions::Conditions;
use crate::store::Via;

impl Connection {
    pub(super) async fn control(
        &self,
        vm_id: &str,
        verb: Verb,
        params: Params,
    ) -> Result<Value, ApiError> {
        let span = tracing::info_span!("ws_vm_control", user_id = %self.user.id, vm_id, action = verb.name(), job_id = tracing::field::Empty);
        let state = &self.state;
        let accepted = async {
            let action = Action::parse(verb, params, &state.settings)?;
            lifecycle::request(state, &self.user, vm_id, action, Via::WebSocket, |_| {
                Conditions::default()
            })
            .await
        }
        .instrument(span)
        .await
        .map_err(control_error)?;
        let data = Accepted {
            job_id: accepted.job_id,
            vm_id: accepted.vm_id,
            status: accepted.status,
        };
        let mut data = serde_json::to_value(data).map_err(anyhow::Error::from)?;
        data["action"] = json!(verb.name());
        Ok(data)
    }
}

/// A refused `vm-control` as its error frame: the fields it names are the frame's (`data.*`).
fn control_error(e: LifecycleError) -> ApiError {
    match e {
        LifecycleError::TimeoutTooLong { max } => ApiError::validation(
            "data.timeout",
            format!("`timeout` must be at most {max} seconds."),
        ),
        other => other.into(),
    }
}
