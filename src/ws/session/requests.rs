//! What a connection's client asks for: each frame it sends is parsed and answered (a reply
//! frame, or an error frame with the request's id).

use actix_ws::Message;
use serde_json::{json, Value};

use super::subscriptions::Refusal;
use super::writer::Out;
use super::{Connection, End};
use crate::api::error::ApiError;
use crate::app::AppState;
use crate::ws::protocol::{self, ClientFrame, ClientKind, IntervalBounds};

pub(super) fn bounds(state: &AppState) -> IntervalBounds {
    IntervalBounds {
        min_ms: state.settings.ws.monitor_min_interval_ms,
        max_ms: state.settings.ws.monitor_max_interval_ms,
    }
}

impl Connection {
    pub(super) async fn on_message(&mut self, msg: Message) -> Result<(), End> {
        match msg {
            Message::Text(text) => match protocol::parse(&text, bounds(&self.state)) {
                Ok(frame) => self.on_frame(frame).await,
                Err((id, e)) => self.send(protocol::error_frame(&e, &id)).await,
            },
            Message::Binary(_) => {
                let e = ApiError::validation("frame", "Frames must be text (JSON), not binary.");
                self.send(protocol::error_frame(&e, &Value::Null)).await
            }
            Message::Ping(bytes) => {
                let _ = self.out.try_send(Out::Pong(bytes));
                Ok(())
            }
            Message::Close(reason) => Err(End::Answered(reason)),
            Message::Pong(_) | Message::Continuation(_) | Message::Nop => Ok(()),
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) -> Result<(), End> {
        let id = frame.id;
        let answer = match frame.kind {
            ClientKind::Auth { .. } => Err(ApiError::validation(
                "type",
                "This connection is already authenticated.",
            )),
            ClientKind::Ping => Ok(("pong", json!({}))),
            ClientKind::Subscribe { topic, since } => {
                return match self.subscribe(topic, since, &id).await {
                    Ok(()) => Ok(()),
                    Err(Refusal::Api(e)) => self.send(protocol::error_frame(&e, &id)).await,
                    Err(Refusal::End(end)) => Err(end),
                };
            }
            ClientKind::Console(request) => return self.console(request, &id).await,
            ClientKind::Unsubscribe { topic } => Ok(("unsubscribed", self.unsubscribe(&topic))),
            ClientKind::VmControl {
                vm_id,
                verb,
                params,
            } => self
                .control(&vm_id, verb, params)
                .await
                .map(|data| ("vm-control-response", data)),
        };
        match answer {
            Ok((kind, data)) => self.send(protocol::frame(kind, data, &id)).await,
            Err(e) => self.send(protocol::error_frame(&e, &id)).await,
        }
    }
}
