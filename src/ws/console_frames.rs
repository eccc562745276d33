//! The console frames of `/ws` (the seed's WebSocket page): `terminal-connect`,
//! `terminal-input`, `terminal-resize`, `terminal-disconnect` for the serial console, and
//! `vnc-connect`, `vnc-data` (base64 RFB bytes), `vnc-input` (mouse and keyboard),
//! `vnc-disconnect` for the graphical one, parsed into [`ConsoleRequest`] with every bad field
//! named.

use base64::Engine;
use serde_json::{Map, Value};

use crate::api::error::ApiError;

/// The largest `cols` and `rows` a `terminal-resize` may give.
pub const MAX_TERMINAL_SIDE: u16 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleRequest {
    TerminalConnect {
        vm_id: String,
    },
    TerminalInput {
        vm_id: String,
        data: String,
    },
    TerminalResize {
        vm_id: Option<String>,
        cols: u16,
        rows: u16,
    },
    TerminalDisconnect {
        vm_id: String,
    },
    VncConnect {
        vm_id: String,
    },
    VncData {
        vm_id: String,
        data: Vec<u8>,
    },
    VncInput {
        vm_id: String,
        input: VncInput,
    },
    VncDisconnect {
        vm_id: String,
    },
}

/// What a `vnc-input` frame asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VncInput {
    Mouse { x: u16, y: u16, buttons: u8 },
    Keyboard { keysym: u32, down: bool },
}

/// The frame types this module reads.
pub const TYPES: [&str; 8] = [
    "terminal-connect",
    "terminal-input",
    "terminal-resize",
    "terminal-disconnect",
    "vnc-connect",
    "vnc-data",
    "vnc-input",
    "vnc-disconnect",
];

/// Reads the data of a console frame of type `kind` (one of [`TYPES`]).
pub fn parse(kind: &str, data: &Map<String, Value>) -> Result<ConsoleRequest, ApiError> {
    let vm_id = || vm_id(data);
    match kind {
        "terminal-connect" => Ok(ConsoleRequest::TerminalConnect { vm_id: vm_id()? }),
        "terminal-input" => Ok(ConsoleRequest::TerminalInput {
            vm_id: vm_id()?,
            data: match data.get("data") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(invalid(
                        "data",
                        "`data` must be a non-empty string (the keys typed).",
                    ))
                }
            },
        }),
        "terminal-resize" => Ok(ConsoleRequest::TerminalResize {
            vm_id: match data.get("vmId") {
                None | Some(Value::Null) => None,
                Some(_) => Some(vm_id()?),
            },
            cols: side(data, "cols")?,
            rows: side(data, "rows")?,
        }),
        "terminal-disconnect" => Ok(ConsoleRequest::TerminalDisconnect { vm_id: vm_id()? }),
        "vnc-connect" => Ok(ConsoleRequest::VncConnect { vm_id: vm_id()? }),
        "vnc-data" => {
            let text = match data.get("data") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(invalid(
                        "data",
                        "`data` must be non-empty base64 (RFB bytes).",
                    ))
                }
            };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| invalid("data", &format!("`data` is not base64: {e}.")))?;
            Ok(ConsoleRequest::VncData {
                vm_id: vm_id()?,
                data: bytes,
            })
        }
        "vnc-input" => Ok(ConsoleRequest::VncInput {
            vm_id: vm_id()?,
            input: vnc_input(data)?,
        }),
        "vnc-disconnect" => Ok(ConsoleRequest::VncDisconnect { vm_id: vm_id()? }),
        other => Err(invalid(
            "type",
            &format!("`{other}` is not a console frame."),
        )),
    }
}

fn invalid(field: &str, message: &str) -> ApiError {
    let field = if field == "type" {
        field.to_string()
    } else {
        format!("data.{field}")
    };
    ApiError::validation(&field, message)
}

fn vm_id(data: &Map<String, Value>) -> Result<String, ApiError> {
    match data.get("vmId").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(invalid(
            "vmId",
            "`vmId` is required and must be a non-empty string.",
        )),
    }
}

fn side(data: &Map<String, Value>, field: &str) -> Result<u16, ApiError> {
    data.get(field)
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| (1..=MAX_TERMINAL_SIDE).contains(n))
        .ok_or_else(|| {
            invalid(
                field,
                &format!("`{field}` must be a whole number from 1 to {MAX_TERMINAL_SIDE}."),
            )
        })
}

fn vnc_input(data: &Map<String, Value>) -> Result<VncInput, ApiError> {
    let number = |field: &str, max: u64| {
        data.get(field)
            .and_then(Value::as_u64)
            .filter(|n| *n <= max)
            .ok_or_else(|| {
                invalid(
                    field,
                    &format!("`{field}` must be a whole number from 0 to {max}."),
                )
            })
    };
    match data.get("inputType").and_then(Value::as_str) {
        Some("mouse") => Ok(VncInput::Mouse {
            x: u16::try_from(number("x", u64::from(u16::MAX))?).unwrap_or(u16::MAX),
            y: u16::try_from(number("y", u64::from(u16::MAX))?).unwrap_or(u16::MAX),
            buttons: match data.get("buttons") {
                None | Some(Value::Null) => 0,
                Some(_) => u8::try_from(number("buttons", 255)?).unwrap_or(u8::MAX),
            },
        }),
        Some("keyboard") => {
            let keysym = match data.get("key") {
                Some(Value::String(key)) => crate::console::rfb::keysym(key).ok_or_else(|| {
                    invalid("key", &format!("`{key}` is not a key this server knows; send its X11 keysym as a number."))
                })?,
                Some(Value::Number(n)) => n
                    .as_u64()
                    .and_then(|k| u32::try_from(k).ok())
                    .ok_or_else(|| invalid("key", "A numeric `key` is an X11 keysym (0 to 2^32-1)."))?,
                _ => return Err(invalid("key", "`key` is required: a key name (`a`, `Enter`, `ArrowUp`) or an X11 keysym.")),
            };
            let down = data.get("down").and_then(Value::as_bool).ok_or_else(|| {
                invalid("down", "`down` must be true (pressed) or false (released).")
            })?;
            Ok(VncInput::Keyboard { keysym, down })
        }
        _ => Err(invalid(
            "inputType",
            "`inputType` must be `mouse` or `keyboard`.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn field_of(kind: &str, v: Value) -> String {
        match parse(kind, &data(v)) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn terminal_frames_are_read() {
        assert_eq!(
            parse(
                "terminal-input",
                &data(json!({"vmId": "vm-1", "data": "ls\n"}))
            )
            .ok(),
            Some(ConsoleRequest::TerminalInput {
                vm_id: "vm-1".into(),
                data: "ls\n".into()
            })
        );
        assert_eq!(
            parse("terminal-resize", &data(json!({"cols": 80, "rows": 24}))).ok(),
            Some(ConsoleRequest::TerminalResize {
                vm_id: None,
                cols: 80,
                rows: 24
            })
        );
        assert_eq!(
            field_of("terminal-resize", json!({"cols": 0, "rows": 24})),
            "data.cols"
        );
        assert_eq!(
            field_of("terminal-resize", json!({"cols": 80, "rows": 1001})),
            "data.rows"
        );
        assert_eq!(field_of("terminal-connect", json!({})), "data.vmId");
        assert_eq!(
            field_of("terminal-input", json!({"vmId": "vm-1", "data": 5})),
            "data.data"
        );
    }

    #[test]
    fn vnc_data_is_base64() {
        assert_eq!(
            parse("vnc-data", &data(json!({"vmId": "vm-1", "data": "UkZC"}))).ok(),
            Some(ConsoleRequest::VncData {
                vm_id: "vm-1".into(),
                data: b"RFB".to_vec()
            })
        );
        assert_eq!(
            field_of("vnc-data", json!({"vmId": "vm-1", "data": "!!"})),
            "data.data"
        );
    }

    #[test]
    fn vnc_input_is_a_mouse_or_a_key() {
        assert_eq!(
            parse(
                "vnc-input",
                &data(json!({"vmId": "v", "inputType": "mouse", "x": 10, "y": 20, "buttons": 1}))
            )
            .ok(),
            Some(ConsoleRequest::VncInput {
                vm_id: "v".into(),
                input: VncInput::Mouse {
                    x: 10,
                    y: 20,
                    buttons: 1
                }
            })
        );
        assert_eq!(
            parse(
                "vnc-input",
                &data(json!({"vmId": "v", "inputType": "keyboard", "key": "Enter", "down": true}))
            )
            .ok(),
            Some(ConsoleRequest::VncInput {
                vm_id: "v".into(),
                input: VncInput::Keyboard {
                    keysym: 0xff0d,
                    down: true
                }
            })
        );
        assert_eq!(
            field_of(
                "vnc-input",
                json!({"vmId": "v", "inputType": "mouse", "x": 70000, "y": 1})
            ),
            "data.x"
        );
        assert_eq!(
            field_of(
                "vnc-input",
                json!({"vmId": "v", "inputType": "keyboard", "key": "Hyper", "down": true})
            ),
            "data.key"
        );
        assert_eq!(
            field_of(
                "vnc-input",
                json!({"vmId": "v", "inputType": "keyboard", "key": "a"})
            ),
            "data.down"
        );
        assert_eq!(
            field_of("vnc-input", json!({"vmId": "v", "inputType": "pen"})),
            "data.inputType"
        );
    }
}
