//! Live fan-out: a log event from the hub goes to each subscription that has not passed it yet
//! (one status frame per VM event, an `image-event` frame per image event), system events to subscribed administrators, and the monitor and
//! usage ticks become frames of their own.

use bytestring::ByteString;
use serde_json::{json, Value};

use super::{Connection, End};
use crate::app::AppState;
use crate::bus::system::SystemEvent;
use crate::bus::{FeedEvent, FeedStream};
use crate::monitor::host::HostMonitor;
use crate::ws::protocol::{self, Topic};

impl Connection {
    /// Whether `topic` may carry `event` to this user: their own VMs' events and their own image
    /// imports' jobs (everything for administrators), and every image's events on `images`,
    /// whose subscription needed `image:read`.
    fn visible(&self, topic: &Topic, event: &FeedEvent) -> bool {
        matches!(topic, Topic::Images)
            || self.user.sees_all()
            || event.owner_id.as_deref() == Some(self.user.id.as_str())
    }

    pub(super) fn frame_for(&self, topic: &Topic, event: &FeedEvent) -> Option<ByteString> {
        frame_for_static(&self.state, topic, event)
    }

    pub(super) async fn on_event(&mut self, event: &FeedEvent) -> Result<(), End> {
        let mut status_sent = false;
        let mut frames = Vec::new();
        for index in 0..self.subs.len() {
            if event.position <= self.subs[index].cursor {
                continue;
            }
            self.subs[index].cursor = event.position;
            let sub = &self.subs[index];
            if !self.visible(&sub.topic, event) {
                continue;
            }
            let is_status = matches!(sub.topic, Topic::VmStatus { .. } | Topic::VmStatusAll);
            if is_status && status_sent {
                continue;
            }
            if let Some(frame) = frame_for_static(&self.state, &sub.topic, event) {
                status_sent |= is_status;
                frames.push(frame);
            }
        }
        for frame in frames {
            self.send_at(frame, Some(event.position)).await?;
        }
        Ok(())
    }

    pub(super) async fn on_system(&mut self, event: &SystemEvent) -> Result<(), End> {
        if !self.system_events {
            return Ok(());
        }
        self.send(protocol::frame("system-event", json!(event), &Value::Null))
            .await
    }

    pub(super) async fn on_monitor_tick(&mut self) -> Result<(), End> {
        let Some((monitor, _, interval)) = self.monitor.as_mut() else {
            return Ok(());
        };
        let mut data = json!(monitor.sample());
        data["interval"] = json!(interval);
        self.send(protocol::frame("system-monitor", data, &Value::Null))
            .await
    }

    /// Usage figures of the running VMs this connection follows (not from the log: no position).
    pub(super) async fn on_usage_tick(&mut self) -> Result<(), End> {
        if self.subs.is_empty() {
            return Ok(());
        }
        let all = self
            .subs
            .iter()
            .any(|s| matches!(s.topic, Topic::VmStatusAll));
        let board = self.state.usage.snapshot();
        let mut frames = Vec::new();
        for (vm_id, sample) in board.iter() {
            let followed = all
                || self
                    .subs
                    .iter()
                    .any(|s| matches!(&s.topic, Topic::VmStatus { vm_id: v } if v == vm_id));
            if followed && self.user.may_access(&sample.owner_id) {
                frames.push(protocol::frame(
                    "vm-status",
                    json!({
                        "vmId": vm_id,
                        "status": "running",
                        "usage": sample.usage,
                        "sampledAt": sample.at,
                    }),
                    &Value::Null,
                ));
            }
        }
        for frame in frames {
            self.send(frame).await?;
        }
        Ok(())
    }
}

/// The frame `topic` gets for `event`.
fn frame_for_static(state: &AppState, topic: &Topic, event: &FeedEvent) -> Option<ByteString> {
    let vm_event = event.stream == FeedStream::Vm;
    match topic {
        Topic::VmStatus { vm_id } if !vm_event || *vm_id != event.stream_id => None,
        Topic::VmStatus { .. } | Topic::VmStatusAll if !vm_event => None,
        Topic::VmStatus { .. } | Topic::VmStatusAll => Some(protocol::status_frame(event, || {
            state
                .usage
                .get(&event.stream_id)
                .map(|sample| json!(sample.usage))
        })),
        Topic::Jobs => protocol::job_frame(event),
        Topic::Images => (event.stream == FeedStream::Image).then(|| protocol::image_frame(event)),
        Topic::SystemEvent | Topic::SystemMonitor { .. } => None,
    }
}

pub(super) async fn monitor_tick(monitor: &mut Option<(HostMonitor, tokio::time::Interval, u64)>) {
    match monitor {
        Some((_, tick, _)) => {
            tick.tick().await;
        }
        None => std::future::pending().await,
    }
}
