//! The WebSocket wire format (see `API.md`, "WebSocket"): client frames `{"type","data","id"}`,
//! server frames `{"type","data","id","timestamp"}` with `id` echoing the request it answers.
//! Parsing here turns every malformed frame into an `ApiError` that names the field.

use bytestring::ByteString;
use serde_json::{json, Map, Value};

use crate::api::envelope::timestamp;
use crate::api::error::ApiError;
use crate::app::lifecycle::{Params, Verb};
use crate::bus::FeedEvent;
use crate::vm::VmStatus;

/// A client frame, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientFrame {
    pub kind: ClientKind,
    /// Echoed on the answer; any JSON value the client chose.
    pub id: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientKind {
    Auth {
        token: String,
    },
    Subscribe {
        topic: Topic,
        since: Option<i64>,
    },
    Unsubscribe {
        topic: Topic,
    },
    VmControl {
        vm_id: String,
        verb: Verb,
        params: Params,
    },
    Ping,
    /// A console frame (`terminal-*`, `vnc-*`; see `ws::console_frames`).
    Console(super::console_frames::ConsoleRequest),
}

/// What a subscription is to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    VmStatus {
        vm_id: String,
    },
    VmStatusAll,
    Jobs,
    /// Every image's events: imports requested, their progress, images imported, uploaded,
    /// failed or deleted.
    Images,
    SystemEvent,
    /// Host figures every `interval_ms`.
    SystemMonitor {
        interval_ms: u64,
    },
}

impl Topic {
    /// The permission a subscription to the topic needs.
    pub fn permission(&self) -> crate::auth::Permission {
        use crate::auth::Permission;
        match self {
            Topic::VmStatus { .. } | Topic::VmStatusAll => Permission::VmRead,
            Topic::Jobs => Permission::JobRead,
            Topic::Images => Permission::ImageRead,
            Topic::SystemEvent | Topic::SystemMonitor { .. } => Permission::SystemRead,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Topic::VmStatus { .. } => "vm-status",
            Topic::VmStatusAll => "vm-status-all",
            Topic::Jobs => "jobs",
            Topic::Images => "images",
            Topic::SystemEvent => "system-event",
            Topic::SystemMonitor { .. } => "system-monitor",
        }
    }

    /// Whether its frames come from the event log (and so carry positions and take `since`).
    pub fn from_log(&self) -> bool {
        match self {
            Topic::VmStatus { .. } | Topic::VmStatusAll | Topic::Jobs | Topic::Images => true,
            Topic::SystemEvent | Topic::SystemMonitor { .. } => false,
        }
    }

    /// Two subscriptions are the same when topic and VM are (a monitor's interval may change).
    pub fn same_as(&self, other: &Topic) -> bool {
        match (self, other) {
            (Topic::VmStatus { vm_id: a }, Topic::VmStatus { vm_id: b }) => a == b,
            (a, b) => a.name() == b.name() && !matches!(a, Topic::VmStatus { .. }),
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Topic::VmStatus { vm_id } => json!({"topic": self.name(), "vmId": vm_id}),
            Topic::SystemMonitor { interval_ms } => {
                json!({"topic": self.name(), "interval": interval_ms})
            }
            _ => json!({"topic": self.name()}),
        }
    }
}

/// Bounds a `system-monitor` interval must keep.
#[derive(Debug, Clone, Copy)]
pub struct IntervalBounds {
    pub min_ms: u64,
    pub max_ms: u64,
}

const DEFAULT_MONITOR_INTERVAL_MS: u64 = 5_000;

/// Reads one text frame. On error, the `id` (when it could be read) is returned for the echo.
pub fn parse(text: &str, bounds: IntervalBounds) -> Result<ClientFrame, (Value, ApiError)> {
    let value: Value = crate::api::strict_json::from_str(text)
        .map_err(|e| (Value::Null, ApiError::BadJson(e.to_string())))?;
    let Value::Object(frame) = &value else {
        return Err((
            Value::Null,
            ApiError::validation("frame", "A frame must be a JSON object."),
        ));
    };
    let id = frame.get("id").cloned().unwrap_or(Value::Null);
    crate::api::input::check_document("frame", &value).map_err(|e| (id.clone(), e))?;
    parse_kind(frame, bounds)
        .map(|kind| ClientFrame {
            kind,
            id: id.clone(),
        })
        .map_err(|e| (id, e))
}

fn parse_kind(frame: &Map<String, Value>, bounds: IntervalBounds) -> Result<ClientKind, ApiError> {
    let kind = frame
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::validation("type", "Every frame needs a string `type`."))?;
    let empty = Map::new();
    let data = match frame.get("data") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(data)) => data,
        Some(_) => return Err(ApiError::validation("data", "`data` must be an object.")),
    };
    match kind {
        "auth" => Ok(ClientKind::Auth {
            token: required_str(data, "token")?,
        }),
        "subscribe" => {
            let topic = topic(data, bounds)?;
            let since = match data.get("since") {
                None | Some(Value::Null) => None,
                Some(v) => {
                    let since = v
                        .as_i64()
                        .filter(|p| *p >= 0)
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()).filter(|p: &i64| *p >= 0))
                        .ok_or_else(|| {
                            ApiError::validation("data.since", "`since` must be a position (an integer of 0 or more).")
                        })?;
                    if !topic.from_log() {
                        return Err(ApiError::validation(
                            "data.since",
                            format!("`{}` is not replayable from the log; drop `since`.", topic.name()),
                        ));
                    }
                    Some(since)
                }
            };
            Ok(ClientKind::Subscribe { topic, since })
        }
        "unsubscribe" => Ok(ClientKind::Unsubscribe {
            topic: topic(data, bounds)?,
        }),
        "vm-control" => {
            let vm_id = required_str(data, "vmId")?;
            let (verb, params) = action(data)?;
            Ok(ClientKind::VmControl {
                vm_id,
                verb,
                params,
            })
        }
        "ping" => Ok(ClientKind::Ping),
        console if super::console_frames::TYPES.contains(&console) => {
            super::console_frames::parse(console, data).map(ClientKind::Console)
        }
        other => Err(ApiError::validation(
            "type",
            format!("`{other}` is not a frame type; use auth, subscribe, unsubscribe, vm-control, ping, or a terminal-* or vnc-* console frame."),
        )),
    }
}

fn required_str(data: &Map<String, Value>, field: &str) -> Result<String, ApiError> {
    match data.get(field).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(ApiError::validation(
            &format!("data.{field}"),
            format!("`{field}` is required and must be a non-empty string."),
        )),
    }
}

fn topic(data: &Map<String, Value>, bounds: IntervalBounds) -> Result<Topic, ApiError> {
    match required_str(data, "topic")?.as_str() {
        "vm-status" => Ok(Topic::VmStatus {
            vm_id: required_str(data, "vmId")?,
        }),
        "vm-status-all" => Ok(Topic::VmStatusAll),
        "jobs" => Ok(Topic::Jobs),
        "images" => Ok(Topic::Images),
        "system-event" => Ok(Topic::SystemEvent),
        "system-monitor" => {
            let interval_ms = match data.get("interval") {
                None | Some(Value::Null) => DEFAULT_MONITOR_INTERVAL_MS.clamp(bounds.min_ms, bounds.max_ms),
                Some(v) => v
                    .as_u64()
                    .filter(|ms| (bounds.min_ms..=bounds.max_ms).contains(ms))
                    .ok_or_else(|| {
                        ApiError::validation(
                            "data.interval",
                            format!(
                                "`interval` must be whole milliseconds from {} to {}.",
                                bounds.min_ms, bounds.max_ms
                            ),
                        )
                    })?,
            };
            Ok(Topic::SystemMonitor { interval_ms })
        }
        other => Err(ApiError::validation(
            "data.topic",
            format!("`{other}` is not a topic; use vm-status, vm-status-all, jobs, images, system-event or system-monitor."),
        )),
    }
}

/// The verb of a `vm-control` frame, and (for `stop`) its parameters as sent; checking them
/// against the settings is `app::lifecycle`'s, shared with REST.
fn action(data: &Map<String, Value>) -> Result<(Verb, Params), ApiError> {
    let name = required_str(data, "action")?;
    let verb = Verb::from_name(&name).ok_or_else(|| {
        ApiError::validation(
            "data.action",
            format!("`{name}` is not an action; use start, stop, restart, pause, resume or reset."),
        )
    })?;
    // As REST refuses a body field a verb does not read (`restart` with `force`), so does this.
    let fields: &[&str] = if verb == Verb::Stop {
        &["vmId", "action", "force", "timeout"]
    } else {
        &["vmId", "action"]
    };
    if let Some(extra) = data.keys().find(|k| !fields.contains(&k.as_str())) {
        let message = if matches!(extra.as_str(), "force" | "timeout") {
            format!("`{name}` takes no `{extra}`; only `stop` reads it.")
        } else {
            format!(
                "`{extra}` is not a field of `vm-control`; `{name}` takes {}.",
                fields.join(", ")
            )
        };
        return Err(ApiError::validation(&format!("data.{extra}"), message));
    }
    if verb != Verb::Stop {
        return Ok((verb, Params::default()));
    }
    let force = match data.get("force") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::validation(
                "data.force",
                "`force` must be true or false.",
            ))
        }
    };
    let timeout = match data.get("timeout") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ApiError::validation("data.timeout", "`timeout` must be whole seconds.")
        })?),
    };
    Ok((verb, Params { force, timeout }))
}

/// A server frame.
pub fn frame(kind: &str, data: Value, id: &Value) -> String {
    json!({"type": kind, "data": data, "id": id, "timestamp": timestamp()}).to_string()
}

/// The `vm-status` frame of an event, made by the first connection that needs it and shared with
/// the rest. `usage` gives a running VM's CPU and memory figures; it is asked once, then.
pub fn status_frame(event: &FeedEvent, usage: impl FnOnce() -> Option<Value>) -> ByteString {
    event
        .frames
        .status
        .get_or_init(|| {
            let mut data = (*event.body).clone();
            if event.status == Some(VmStatus::Running) {
                if let Some(usage) = usage() {
                    data["usage"] = usage;
                }
            }
            frame("vm-status", data, &Value::Null).into()
        })
        .clone()
}

/// The `job-update` frame of an event that queued or ended a job, shared like
/// [`status_frame`].
pub fn job_frame(event: &FeedEvent) -> Option<ByteString> {
    event
        .frames
        .job
        .get_or_init(|| {
            event.job.as_ref().map(|job| {
                let mut data = job.to_json(event.position, event.stream, &event.stream_id);
                data["event"] = json!(event.event_type);
                frame("job-update", data, &Value::Null).into()
            })
        })
        .clone()
}

/// The `image-event` frame of an image stream's event (the same body as on NATS), shared like
/// [`status_frame`].
pub fn image_frame(event: &FeedEvent) -> ByteString {
    event
        .frames
        .image
        .get_or_init(|| frame("image-event", (*event.body).clone(), &Value::Null).into())
        .clone()
}

/// An `error` frame with the API's code for `e`.
pub fn error_frame(e: &ApiError, id: &Value) -> String {
    let (_, code) = e.status_and_code();
    frame(
        "error",
        json!({"code": code, "message": e.summary(), "details": e.details(), "field": e.field()}),
        id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: IntervalBounds = IntervalBounds {
        min_ms: 500,
        max_ms: 60_000,
    };

    fn parse_ok(text: &str) -> ClientFrame {
        parse(text, BOUNDS).expect("a valid frame")
    }

    fn field_of(text: &str) -> String {
        match parse(text, BOUNDS) {
            Err((_, ApiError::Validation { field, .. })) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_subscription_with_since_is_read() {
        let f = parse_ok(
            r#"{"type":"subscribe","data":{"topic":"vm-status","vmId":"vm-1","since":41},"id":"r1"}"#,
        );
        assert_eq!(f.id, json!("r1"));
        assert_eq!(
            f.kind,
            ClientKind::Subscribe {
                topic: Topic::VmStatus {
                    vm_id: "vm-1".into()
                },
                since: Some(41)
            }
        );
    }

    #[test]
    fn vm_status_needs_a_vm() {
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"vm-status"}}"#),
            "data.vmId"
        );
    }

    #[test]
    fn an_unknown_topic_names_the_field() {
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"weather"}}"#),
            "data.topic"
        );
    }

    #[test]
    fn a_monitor_interval_out_of_bounds_is_refused() {
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"system-monitor","interval":10}}"#),
            "data.interval"
        );
        let f =
            parse_ok(r#"{"type":"subscribe","data":{"topic":"system-monitor","interval":1000}}"#);
        assert_eq!(
            f.kind,
            ClientKind::Subscribe {
                topic: Topic::SystemMonitor { interval_ms: 1000 },
                since: None
            }
        );
    }

    #[test]
    fn since_only_applies_to_topics_from_the_log() {
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"system-event","since":3}}"#),
            "data.since"
        );
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"jobs","since":-1}}"#),
            "data.since"
        );
    }

    #[test]
    fn a_control_frame_names_a_known_action() {
        let f = parse_ok(
            r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"stop","force":true},"id":7}"#,
        );
        assert_eq!(
            f.kind,
            ClientKind::VmControl {
                vm_id: "vm-1".into(),
                verb: Verb::Stop,
                params: Params {
                    force: Some(true),
                    timeout: None
                }
            }
        );
        assert_eq!(
            field_of(r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"explode"}}"#),
            "data.action"
        );
    }

    #[test]
    fn a_control_frame_refuses_a_field_its_verb_does_not_read() {
        assert_eq!(
            field_of(
                r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"restart","force":true}}"#
            ),
            "data.force"
        );
        assert_eq!(
            field_of(
                r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"pause","timeout":5}}"#
            ),
            "data.timeout"
        );
        assert_eq!(
            field_of(r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"stop","bogus":1}}"#),
            "data.bogus"
        );
        let f = parse_ok(r#"{"type":"vm-control","data":{"vmId":"vm-1","action":"reset"}}"#);
        assert!(matches!(
            f.kind,
            ClientKind::VmControl {
                verb: Verb::Reset,
                ..
            }
        ));
    }

    #[test]
    fn the_id_is_kept_for_the_error_echo() {
        match parse(r#"{"type":"fly","id":"x9"}"#, BOUNDS) {
            Err((id, ApiError::Validation { field, .. })) => {
                assert_eq!(id, json!("x9"));
                assert_eq!(field, "type");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nul_is_named_by_its_path_in_the_frame() {
        assert_eq!(
            field_of(r#"{"type":"subscribe","data":{"topic":"vm-status","vmId":"a\u0000"}}"#),
            "data.vmId"
        );
        // A key that cannot be stored is named by the document holding it: the frame.
        assert_eq!(field_of(r#"{"type":"ping","a\u0000":1}"#), "frame");
        // A frame that is not an object is refused as such, whatever it holds.
        assert_eq!(field_of(r#""\u0000""#), "frame");
        assert_eq!(field_of(r#"["\u0000"]"#), "frame");
    }

    #[test]
    fn bad_json_is_its_own_error() {
        assert!(matches!(
            parse("{nope", BOUNDS),
            Err((_, ApiError::BadJson(_)))
        ));
        assert!(matches!(
            parse("[1]", BOUNDS),
            Err((_, ApiError::Validation { .. }))
        ));
    }

    #[test]
    fn an_error_frame_carries_the_code_and_the_echo() {
        let text = error_frame(&ApiError::VmNotFound("vm-9".into()), &json!(5));
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["id"], 5);
        assert_eq!(v["data"]["code"], "VM_NOT_FOUND");
        assert!(v["timestamp"].is_string());
    }
}

#[cfg(test)]
mod frame_tests {
    use std::cell::Cell;

    use super::*;
    use crate::store::audit::AuditRow;
    use crate::store::feed::FeedRow;

    fn event(status: &str) -> FeedEvent {
        FeedEvent::from_row(&FeedRow {
            row: AuditRow {
                position: 7,
                aggregate_type: "vm".into(),
                aggregate_id: "vm-1".into(),
                sequence: 2,
                event_type: "VmStarted".into(),
                version: "1".into(),
                payload: json!({"VmStarted": {"pid": 1}}),
                metadata: serde_json::from_value(
                    json!({"status": status, "job_id": "job-1", "job_outcome": "succeeded"}),
                )
                .expect("stored metadata reads"),
                recorded_at: chrono::Utc::now(),
                level: "info".into(),
            },
            owner_id: Some("user-1".into()),
        })
        .expect("a feed event")
    }

    fn parsed(frame: &ByteString) -> Value {
        serde_json::from_str(frame).expect("a JSON frame")
    }

    #[test]
    fn every_connection_gets_the_frame_made_once() {
        let event = event("running");
        let asked = Cell::new(0);
        let usage = || {
            asked.set(asked.get() + 1);
            Some(json!({"cpuPercent": 12.5}))
        };
        let first = status_frame(&event, usage);
        let copy = event.clone(); // what another connection receives from the hub
        let second = status_frame(&copy, || {
            asked.set(asked.get() + 1);
            None
        });
        assert_eq!(first, second);
        assert_eq!(asked.get(), 1, "usage is sampled once per event");
        let frame = parsed(&first);
        assert_eq!(frame["type"], "vm-status");
        assert_eq!(frame["data"]["position"], 7);
        assert_eq!(frame["data"]["usage"]["cpuPercent"], 12.5);
    }

    #[test]
    fn only_a_running_vm_carries_usage() {
        let frame = status_frame(&event("stopped"), || Some(json!({"cpuPercent": 1.0})));
        assert!(parsed(&frame)["data"].get("usage").is_none());
    }

    #[test]
    fn a_job_frame_names_the_job_and_its_event() {
        let frame = job_frame(&event("running")).expect("a job frame");
        let frame = parsed(&frame);
        assert_eq!(frame["type"], "job-update");
        assert_eq!(frame["data"]["event"], "VmStarted");
        assert_eq!(frame["data"]["status"], "succeeded");
    }
}
