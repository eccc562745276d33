//! `voidvm events` and `voidvm logs`: the event log as a page, or with `--follow` as a live
//! stream over the WebSocket feed.
//!
//! Following copies the SDKs' protocol: connect to `/ws?token=…`, send `subscribe` with topic
//! `vm-status-all` (or `vm-status` + `vmId`) and `since` = the last position seen; the server
//! replays what came after it, then goes live. After a disconnect (a server restart) the CLI
//! reconnects with backoff and resubscribes from the last position, skipping any position it
//! already printed, so nothing is missed or shown twice.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use super::args::{EventsArgs, LogsArgs};
use super::client::{CliError, CliResult, Client};
use super::jobs::items;
use super::output::{Column, Output};

const EVENT_COLUMNS: &[Column] = &[
    ("POSITION", "/position"),
    ("TIME", "/recordedAt"),
    ("STREAM", "/streamId"),
    ("TYPE", "/type"),
    ("ACTOR", "/actor/name"),
    ("JOB", "/jobId"),
];

const LOG_COLUMNS: &[Column] = &[
    ("TIME", "/timestamp"),
    ("LEVEL", "/level"),
    ("TYPE", "/type"),
    ("STREAM", "/streamId"),
    ("ACTOR", "/actor"),
    ("MESSAGE", "/message"),
];

/// Consecutive failed connection attempts after which `--follow` gives up.
const MAX_RECONNECTS: u32 = 30;

/// The server pings every 15 s by default; a connection silent for this long is dead (a host
/// that vanished sends no FIN) and is replaced.
const SILENCE: Duration = Duration::from_secs(60);

pub async fn run(client: &Client, out: Output, args: EventsArgs) -> CliResult<()> {
    if args.follow {
        return follow(client, out, &args).await;
    }
    let mut query = Vec::new();
    query.extend(args.vm.clone().map(|v| ("vmId", v)));
    query.extend(args.event_type.clone().map(|t| ("type", t)));
    query.extend(args.after.map(|a| ("after", a.to_string())));
    query.extend(args.limit.map(|l| ("limit", l.to_string())));
    let data = client.get("/events", &query).await?;
    out.list(&data, items(&data), EVENT_COLUMNS)?;
    if !out.json && data["hasMore"] == Value::Bool(true) {
        eprintln!(
            "More events: --after {}",
            super::output::cell(data.get("next"))
        );
    }
    Ok(())
}

pub async fn logs(client: &Client, out: Output, args: LogsArgs) -> CliResult<()> {
    let mut query = vec![
        ("page", args.page.to_string()),
        ("limit", args.limit.to_string()),
    ];
    query.extend(args.level.map(|l| ("level", l)));
    query.extend(args.from.map(|f| ("from", f)));
    query.extend(args.to.map(|t| ("to", t)));
    let data = client.get("/logs", &query).await?;
    out.list(&data, items(&data), LOG_COLUMNS)
}

/// One subscription across reconnects: where to resume and what was printed already.
#[derive(Debug, Clone)]
pub struct FeedState {
    pub vm: Option<String>,
    /// The last position printed (or the start position, once known).
    pub last: Option<i64>,
    seq: u32,
    sub_id: String,
}

/// What one server frame means to the follower.
#[derive(Debug)]
pub enum Frame {
    /// The subscription is live (the first one tells where the feed stands).
    Subscribed,
    /// An event not printed before.
    Event(Value),
    /// The server refused something: code and message.
    Error(CliError),
    /// Anything else (pongs, duplicates after a resume, other frame types).
    Ignored,
}

impl FeedState {
    pub fn new(vm: Option<String>, since: Option<i64>) -> FeedState {
        FeedState {
            vm,
            last: since,
            seq: 0,
            sub_id: String::new(),
        }
    }

    /// The `subscribe` frame for a (re)connection.
    pub fn subscribe_frame(&mut self) -> String {
        self.seq += 1;
        self.sub_id = format!("sub-{}", self.seq);
        let mut data = match &self.vm {
            Some(vm) => json!({"topic": "vm-status", "vmId": vm}),
            None => json!({"topic": "vm-status-all"}),
        };
        if let Some(since) = self.last {
            data["since"] = json!(since);
        }
        json!({"type": "subscribe", "id": self.sub_id, "data": data}).to_string()
    }

    /// Reads one server frame.
    pub fn accept(&mut self, raw: &str) -> Frame {
        let Ok(frame) = serde_json::from_str::<Value>(raw) else {
            return Frame::Ignored;
        };
        let data = &frame["data"];
        match frame["type"].as_str() {
            Some("subscribed") if frame["id"].as_str() == Some(&self.sub_id) => {
                if self.last.is_none() {
                    self.last = data["position"].as_i64();
                }
                Frame::Subscribed
            }
            Some("error") => Frame::Error(CliError::Api {
                status: feed_status(data["code"].as_str().unwrap_or_default()),
                code: data["code"].as_str().unwrap_or("FEED_ERROR").to_string(),
                message: data["message"].as_str().unwrap_or("feed error").to_string(),
                details: data["details"].as_str().map(str::to_string),
            }),
            Some("vm-status") => match data["position"].as_i64() {
                Some(p) if self.last.is_some_and(|last| p <= last) => Frame::Ignored,
                Some(p) => {
                    self.last = Some(p);
                    Frame::Event(data.clone())
                }
                None => Frame::Ignored,
            },
            _ => Frame::Ignored,
        }
    }
}

/// The HTTP status an `error` frame's code stands for, so it gets the same exit status.
fn feed_status(code: &str) -> u16 {
    match code {
        "UNAUTHORIZED" => 401,
        c if c.ends_with("NOT_FOUND") => 404,
        c if c == "INTERNAL_ERROR" || c.ends_with("UNAVAILABLE") => 500,
        _ => 400,
    }
}

/// Whether an event passes `--type` (comma-separated types; none means all).
pub fn wanted(types: Option<&str>, event: &Value) -> bool {
    let Some(types) = types else { return true };
    let ty = event["type"].as_str().unwrap_or_default();
    types.split(',').map(str::trim).any(|t| t == ty)
}

/// One followed event as a line: JSON for scripts, columns for people.
pub fn event_line(out: Output, event: &Value) -> String {
    if out.json {
        return event.to_string();
    }
    format!(
        "{:>8}  {}  {:<14}  {:<20}  {}",
        super::output::cell(event.get("position")),
        super::output::cell(event.get("recordedAt")),
        super::output::cell(event.get("streamId")),
        super::output::cell(event.get("type")),
        super::output::cell(event.get("status")),
    )
}

fn feed_url(origin: &str, token: &str) -> String {
    let ws = match origin.strip_prefix("http") {
        Some(rest) => format!("ws{rest}"),
        None => origin.to_string(),
    };
    let token = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC);
    format!("{ws}/ws?token={token}")
}

/// How one connection ended, when it did not end the command.
enum Ended {
    /// Printed `--limit` events.
    Done,
    /// Dropped; reconnect. `live` says whether the subscription got going.
    Dropped { live: bool, why: String },
}

async fn follow(client: &Client, out: Output, args: &EventsArgs) -> CliResult<()> {
    let token = client.require_token()?.to_string();
    // Fail at once, with the right exit status, on a server that is down, a refused token or an
    // unknown VM; only a feed that once worked is worth reconnecting to.
    match &args.vm {
        Some(vm) => {
            client
                .get(&format!("/vms/{}", super::jobs::seg(vm)), &[])
                .await?
        }
        None => client.get("/auth/me", &[]).await?,
    };
    let url = feed_url(client.origin(), &token);
    let mut state = FeedState::new(args.vm.clone(), args.after);
    let mut printed = 0u32;
    let mut failures = 0u32;
    loop {
        match connection(&url, &mut state, out, args, &mut printed).await? {
            Ended::Done => return Ok(()),
            Ended::Dropped { live, why } => {
                failures = if live { 1 } else { failures + 1 };
                if failures > MAX_RECONNECTS {
                    return Err(CliError::Unreachable {
                        url: client.origin().to_string(),
                        reason: format!(
                            "the feed could not reconnect after {MAX_RECONNECTS} tries ({why})"
                        ),
                    });
                }
                let delay = Duration::from_millis((250u64 << failures.min(4)).min(3000));
                eprintln!(
                    "voidvm: feed disconnected ({why}); reconnecting in {:.1}s",
                    delay.as_secs_f64()
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// One WebSocket connection: subscribe, print events until it drops or `--limit` is reached.
async fn connection(
    url: &str,
    state: &mut FeedState,
    out: Output,
    args: &EventsArgs,
    printed: &mut u32,
) -> CliResult<Ended> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let dropped = |live: bool, why: String| Ok(Ended::Dropped { live, why });
    let (mut ws, _) = match tokio_tungstenite::connect_async(url).await {
        Ok(ws) => ws,
        Err(WsError::Http(response)) if response.status() == 401 => {
            return Err(CliError::Api {
                status: 401,
                code: "UNAUTHORIZED".into(),
                message: "The feed refused the token".into(),
                details: None,
            })
        }
        Err(e) => return dropped(false, e.to_string()),
    };
    if let Err(e) = ws.send(Message::text(state.subscribe_frame())).await {
        return dropped(false, e.to_string());
    }
    let mut live = false;
    loop {
        let Ok(next) = tokio::time::timeout(SILENCE, ws.next()).await else {
            return dropped(live, format!("nothing heard for {} s", SILENCE.as_secs()));
        };
        let Some(message) = next else {
            return dropped(live, "the connection ended".into());
        };
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(Some(close)))
                if close.code == CloseCode::Policy && close.reason.contains("token") =>
            {
                return Err(CliError::Api {
                    status: 401,
                    code: "UNAUTHORIZED".into(),
                    message: format!("The feed was closed: {}", close.reason),
                    details: None,
                });
            }
            Ok(Message::Close(close)) => {
                let why = close
                    .map(|c| format!("closed: {} {}", c.code, c.reason))
                    .unwrap_or_else(|| "closed".into());
                return dropped(live, why);
            }
            Ok(_) => continue,
            Err(e) => return dropped(live, e.to_string()),
        };
        match state.accept(&text) {
            Frame::Subscribed => {
                live = true;
                eprintln!(
                    "Following events after position {}.",
                    super::output::cell(state.last.map(Value::from).as_ref())
                );
            }
            Frame::Event(event) => {
                if !wanted(args.event_type.as_deref(), &event) {
                    continue;
                }
                super::output::line(&event_line(out, &event))?;
                *printed += 1;
                if args.limit.is_some_and(|limit| *printed >= limit) {
                    let _ = ws.close(None).await;
                    return Ok(Ended::Done);
                }
            }
            Frame::Error(e) => return Err(e),
            Frame::Ignored => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(position: i64) -> String {
        json!({"type": "vm-status", "data": {"position": position, "type": "VmStarted"}, "id": null}).to_string()
    }

    #[test]
    fn the_first_subscription_starts_where_the_feed_stands() {
        let mut state = FeedState::new(None, None);
        let frame: Value = serde_json::from_str(&state.subscribe_frame()).unwrap();
        assert_eq!(
            frame,
            json!({"type": "subscribe", "id": "sub-1", "data": {"topic": "vm-status-all"}})
        );
        let subscribed =
            json!({"type": "subscribed", "id": "sub-1", "data": {"position": 41}}).to_string();
        assert!(matches!(state.accept(&subscribed), Frame::Subscribed));
        assert_eq!(state.last, Some(41));
    }

    #[test]
    fn a_resume_asks_since_the_last_event_and_skips_what_was_printed() {
        let mut state = FeedState::new(Some("vm-1".into()), Some(5));
        state.subscribe_frame();
        assert!(matches!(state.accept(&event(6)), Frame::Event(_)));
        assert!(matches!(state.accept(&event(7)), Frame::Event(_)));
        // Reconnect: the subscription carries since = 7.
        let frame: Value = serde_json::from_str(&state.subscribe_frame()).unwrap();
        assert_eq!(frame["id"], "sub-2");
        assert_eq!(
            frame["data"],
            json!({"topic": "vm-status", "vmId": "vm-1", "since": 7})
        );
        // A replayed position is not printed twice; a stale `subscribed` answer is ignored.
        assert!(matches!(state.accept(&event(7)), Frame::Ignored));
        let old = json!({"type": "subscribed", "id": "sub-1", "data": {}}).to_string();
        assert!(matches!(state.accept(&old), Frame::Ignored));
        assert!(matches!(state.accept(&event(8)), Frame::Event(_)));
        assert_eq!(state.last, Some(8));
    }

    #[test]
    fn an_error_frame_carries_its_code() {
        let mut state = FeedState::new(None, None);
        let raw =
            json!({"type": "error", "data": {"code": "FORBIDDEN", "message": "no"}}).to_string();
        let Frame::Error(e) = state.accept(&raw) else {
            panic!("not an error")
        };
        assert_eq!(e.to_string(), "FORBIDDEN: no");
        assert_eq!(e.exit_code(), 1);
        let raw = json!({"type": "error", "data": {"code": "VM_NOT_FOUND", "message": "gone"}})
            .to_string();
        let Frame::Error(e) = state.accept(&raw) else {
            panic!("not an error")
        };
        assert_eq!(e.exit_code(), 4);
    }

    #[test]
    fn types_filter_and_urls() {
        let e = json!({"type": "VmStarted"});
        assert!(wanted(None, &e));
        assert!(wanted(Some("VmStopped, VmStarted"), &e));
        assert!(!wanted(Some("VmStopped"), &e));
        assert_eq!(
            feed_url("http://h:1", "a.b+c"),
            "ws://h:1/ws?token=a%2Eb%2Bc"
        );
        assert_eq!(feed_url("https://h", "t"), "wss://h/ws?token=t");
    }
}
