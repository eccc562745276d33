//! Upcasters: events keep the shape they were written in, forever. When a shape changes, the
//! event gets a new version and an upcaster here turns the old shape into the new one as events
//! are read, so the aggregate only ever sees current shapes.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::Value;

/// Every upcaster, oldest change first.
pub fn all() -> Vec<Box<dyn EventUpcaster>> {
    vec![
        Box::new(OperationFailedV1ToV2),
        Box::new(ProcessStartV1ToV2("VmStarted")),
        Box::new(ProcessStartV1ToV2("VmRestarted")),
        Box::new(VmCreatedV1ToV2),
        Box::new(VmReconfiguredV1ToV2),
        Box::new(VmCreatedV2ToV3),
        Box::new(VmReconfiguredV2ToV3),
        Box::new(MediaOperation {
            event_type: "OperationFailed",
            from: "2",
            to: "3",
        }),
        Box::new(MediaOperation {
            event_type: "OperationRetried",
            from: "1",
            to: "2",
        }),
        Box::new(NetworkBridgeV3ToV4("VmCreated")),
        Box::new(NetworkBridgeV3ToV4("VmReconfigured")),
        Box::new(MediaOperation {
            event_type: "OperationFailed",
            from: "3",
            to: "4",
        }),
        Box::new(MediaOperation {
            event_type: "OperationRetried",
            from: "2",
            to: "3",
        }),
    ]
}

/// `VmCreated` and `VmReconfigured` v4 added `bridge` to the network (and the mode `bridge`). A
/// network recorded before named no bridge.
pub struct NetworkBridgeV3ToV4(pub &'static str);

impl EventUpcaster for NetworkBridgeV3ToV4 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.0 && event_version == "3"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let fields = event.payload.get_mut(self.0);
        let network = match self.0 {
            "VmCreated" => fields
                .and_then(|f| f.get_mut("spec"))
                .and_then(|spec| spec.get_mut("network")),
            _ => fields.and_then(|f| f.get_mut("network")),
        };
        if let Some(Value::Object(network)) = network {
            network.entry("bridge").or_insert(Value::Null);
        }
        event.event_version = "4".to_string();
        event
    }
}

/// `OperationFailed` v3 and `OperationRetried` v2 added the operation `media` (an ISO medium
/// change), `OperationFailed` v4 and `OperationRetried` v3 the operation `snapshot` (a disk
/// snapshot change). Their fields did not change: an earlier event reads as it is.
pub struct MediaOperation {
    pub event_type: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl EventUpcaster for MediaOperation {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == self.from
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.event_version = self.to.to_string();
        event
    }
}

/// `VmCreated` v3 added `spec.cloudInit` and `spec.bootOrder`. A VM created before them had no
/// NoCloud seed and QEMU's default boot order.
pub struct VmCreatedV2ToV3;

impl EventUpcaster for VmCreatedV2ToV3 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "VmCreated" && event_version == "2"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(spec)) = event
            .payload
            .get_mut("VmCreated")
            .and_then(|fields| fields.get_mut("spec"))
        {
            spec.entry("cloudInit").or_insert(Value::Null);
            spec.entry("bootOrder").or_insert(Value::Array(Vec::new()));
        }
        event.event_version = "3".to_string();
        event
    }
}

/// `VmReconfigured` v3 added `cloudInit` and `bootOrder`; an earlier change left both alone.
pub struct VmReconfiguredV2ToV3;

impl EventUpcaster for VmReconfiguredV2ToV3 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "VmReconfigured" && event_version == "2"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(fields)) = event.payload.get_mut("VmReconfigured") {
            fields.entry("cloudInit").or_insert(Value::Null);
            fields.entry("bootOrder").or_insert(Value::Null);
        }
        event.event_version = "3".to_string();
        event
    }
}

/// `VmCreated` v2 added `spec.network`. Every VM created before it ran without a NIC; it reads as
/// the default network, user-mode NAT with no forwarded ports, so it gets a NIC at its next start
/// and nothing on the host is reserved for it.
pub struct VmCreatedV1ToV2;

impl EventUpcaster for VmCreatedV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "VmCreated" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(spec)) = event
            .payload
            .get_mut("VmCreated")
            .and_then(|fields| fields.get_mut("spec"))
        {
            spec.entry("network")
                .or_insert(serde_json::json!({"mode": "user", "ports": []}));
        }
        event.event_version = "2".to_string();
        event
    }
}

/// `VmReconfigured` v2 added `network`; a v1 change left the network as it was.
pub struct VmReconfiguredV1ToV2;

impl EventUpcaster for VmReconfiguredV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "VmReconfigured" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(fields)) = event.payload.get_mut("VmReconfigured") {
            fields.entry("network").or_insert(Value::Null);
        }
        event.event_version = "2".to_string();
        event
    }
}

/// `VmStarted` and `VmRestarted` v2 added `processStart`, which with the pid names the process.
/// A v1 event did not record it: it reads as unknown, and the process is matched by pid alone.
pub struct ProcessStartV1ToV2(pub &'static str);

impl EventUpcaster for ProcessStartV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.0 && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(fields)) = event.payload.get_mut(self.0) {
            fields.entry("processStart").or_insert(Value::Null);
        }
        event.event_version = "2".to_string();
        event
    }
}

/// `OperationFailed` v2 added `attempts`. A v1 failure was recorded after at least one try, so
/// it reads as one attempt (the least it can have been).
pub struct OperationFailedV1ToV2;

impl EventUpcaster for OperationFailedV1ToV2 {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == "OperationFailed" && event_version == "1"
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        if let Some(Value::Object(fields)) = event.payload.get_mut("OperationFailed") {
            fields.entry("attempts").or_insert(Value::from(1));
        }
        event.event_version = "2".to_string();
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::VmEvent;
    use serde_json::json;

    #[test]
    fn a_v1_start_reads_with_an_unknown_process_start() {
        for (name, fields) in [
            (
                "VmStarted",
                json!({"jobId": "j", "pid": 42, "accel": "tcg"}),
            ),
            ("VmRestarted", json!({"jobId": "j", "pid": 42})),
        ] {
            let v1 = SerializedEvent {
                aggregate_id: "vm-1".into(),
                sequence: 4,
                aggregate_type: "vm".into(),
                event_type: name.into(),
                event_version: "1".into(),
                payload: json!({ name: fields }),
                metadata: json!({}),
            };
            let up = ProcessStartV1ToV2(name);
            assert!(up.can_upcast(name, "1"));
            assert!(!up.can_upcast(name, "2"));
            let v2 = up.upcast(v1);
            assert_eq!(v2.event_version, "2");
            let event: VmEvent = serde_json::from_value(v2.payload).unwrap();
            match event {
                VmEvent::VmStarted {
                    pid, process_start, ..
                }
                | VmEvent::VmRestarted {
                    pid, process_start, ..
                } => assert_eq!((pid, process_start), (42, None)),
                other => panic!("{name} read as {other:?}"),
            }
        }
    }

    fn v1(event_type: &str, payload: Value) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 1,
            aggregate_type: "vm".into(),
            event_type: event_type.into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
        }
    }

    #[test]
    fn a_v1_creation_reads_as_user_mode_nat_without_ports() {
        let up = VmCreatedV1ToV2;
        assert!(up.can_upcast("VmCreated", "1") && !up.can_upcast("VmCreated", "2"));
        let v2 = up.upcast(v1(
            "VmCreated",
            json!({"VmCreated": {"vmId": "vm-1", "spec": {"name": "a", "description": null,
                "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"},
                "owner": {"id": "u", "name": "u"}, "imagePresent": true, "jobId": "j"}}),
        ));
        assert_eq!(v2.event_version, "2");
        let v3 = VmCreatedV2ToV3.upcast(v2);
        assert_eq!(v3.event_version, "3");
        let up = NetworkBridgeV3ToV4("VmCreated");
        assert!(up.can_upcast("VmCreated", "3") && !up.can_upcast("VmCreated", "4"));
        let v4 = up.upcast(v3);
        assert_eq!(v4.event_version, "4");
        assert_eq!(
            v4.payload["VmCreated"]["spec"]["network"]["bridge"],
            Value::Null
        );
        match serde_json::from_value::<VmEvent>(v4.payload).unwrap() {
            VmEvent::VmCreated { spec, .. } => {
                assert_eq!(spec.cloud_init, None);
                assert!(spec.boot_order.is_empty());
                assert_eq!(spec.network, crate::vm::NetworkSpec::default());
                assert_eq!(spec.network.mode, crate::vm::NetworkMode::User);
            }
            other => panic!("read as {other:?}"),
        }
    }

    #[test]
    fn a_v1_reconfiguration_leaves_the_network_alone() {
        let up = VmReconfiguredV1ToV2;
        assert!(up.can_upcast("VmReconfigured", "1"));
        let v2 = up.upcast(v1(
            "VmReconfigured",
            json!({"VmReconfigured": {"name": "b", "description": null, "cpu": null,
                "memory": null, "requiresRestart": false}}),
        ));
        assert_eq!(v2.event_version, "2");
        let v3 = VmReconfiguredV2ToV3.upcast(v2);
        assert_eq!(v3.event_version, "3");
        assert!(matches!(
            serde_json::from_value::<VmEvent>(v3.payload).unwrap(),
            VmEvent::VmReconfigured {
                network: None,
                cloud_init: None,
                boot_order: None,
                ..
            }
        ));
    }

    #[test]
    fn a_v3_network_change_reads_as_naming_no_bridge() {
        let mut v3 = v1(
            "VmReconfigured",
            json!({"VmReconfigured": {"name": null, "description": null, "cpu": null,
                "memory": null, "network": {"mode": "none", "ports": []}, "cloudInit": null,
                "bootOrder": null, "requiresRestart": true}}),
        );
        v3.event_version = "3".into();
        let v4 = NetworkBridgeV3ToV4("VmReconfigured").upcast(v3);
        assert_eq!(v4.event_version, "4");
        assert_eq!(
            v4.payload["VmReconfigured"]["network"]["bridge"],
            Value::Null
        );
        match serde_json::from_value::<VmEvent>(v4.payload).unwrap() {
            VmEvent::VmReconfigured {
                network: Some(network),
                ..
            } => assert_eq!(
                (network.mode, network.bridge),
                (crate::vm::NetworkMode::None, None)
            ),
            other => panic!("read as {other:?}"),
        }
    }

    #[test]
    fn a_v1_failure_reads_as_one_attempt() {
        let v1 = SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 4,
            aggregate_type: "vm".into(),
            event_type: "OperationFailed".into(),
            event_version: "1".into(),
            payload: json!({"OperationFailed": {"jobId": "j", "operation": "start", "reason": "r"}}),
            metadata: json!({}),
        };
        let up = OperationFailedV1ToV2;
        assert!(up.can_upcast("OperationFailed", "1"));
        assert!(!up.can_upcast("OperationFailed", "2"));
        let v2 = up.upcast(v1);
        assert_eq!(v2.event_version, "2");
        let event: VmEvent = serde_json::from_value(v2.payload).unwrap();
        assert!(matches!(
            event,
            VmEvent::OperationFailed { attempts: 1, .. }
        ));
    }
}
