//! The event schemas in `schemas/events/` against what the code really serialises. Every event
//! type at its current version has a schema, every sample event validates against it, and old
//! versions stay readable through their upcasters. Changing an event's shape without a new version
//! (and a new schema file) fails here. No database is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use jsonschema::Validator;
use serde_json::{json, Value};
use voidvm::store::upcasters::{
    MediaOperation, NetworkBridgeV3ToV4, OperationFailedV1ToV2, ProcessStartV1ToV2,
    VmCreatedV1ToV2, VmCreatedV2ToV3, VmReconfiguredV1ToV2, VmReconfiguredV2ToV3,
};
use voidvm::vm::{
    BootDevice, CloudInitSpec, CloudUser, ConsoleKind, NetworkMode, NetworkSpec, ObservationKind,
    Operation, Owner, PortForward, Protocol, SnapshotName, VmEvent, VmSpec,
};

/// Versions no longer written but still in the log, each read through an upcaster.
const OLD_VERSIONS: &[(&str, u32)] = &[
    ("OperationFailed", 1),
    ("VmStarted", 1),
    ("VmRestarted", 1),
    ("VmCreated", 1),
    ("VmReconfigured", 1),
    ("VmCreated", 2),
    ("VmReconfigured", 2),
    ("OperationFailed", 2),
    ("OperationRetried", 1),
    ("VmCreated", 3),
    ("VmReconfigured", 3),
    ("OperationFailed", 3),
    ("OperationRetried", 2),
];

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/events")
}

fn schema_file(type_name: &str, version: u32) -> String {
    format!("{type_name}.v{version}.json")
}

fn load_schema(type_name: &str, version: u32) -> Value {
    let path = schema_dir().join(schema_file(type_name, version));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read schema {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("schema {} is not JSON: {e}", path.display()))
}

fn validator(type_name: &str, version: u32) -> Validator {
    let schema = load_schema(type_name, version);
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| {
        panic!(
            "schema {} does not compile: {e}",
            schema_file(type_name, version)
        )
    })
}

/// Every validation error of `instance` against the schema, as readable lines.
fn errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

fn assert_valid(type_name: &str, version: u32, instance: &Value) {
    let errs = errors(&validator(type_name, version), instance);
    assert!(
        errs.is_empty(),
        "{instance} does not validate against {}:\n  {}",
        schema_file(type_name, version),
        errs.join("\n  ")
    );
}

fn assert_invalid(type_name: &str, version: u32, instance: &Value, why: &str) {
    assert!(
        !validator(type_name, version).is_valid(instance),
        "{} accepts {instance}, but should reject it ({why})",
        schema_file(type_name, version),
    );
}

/// Names a variant with every one of its fields spelled out and no `_` arm, so that adding a
/// variant or a field does not compile until this test (and the schemas) have been looked at.
/// A new field means a new version: a new schema file and an upcaster, never an edited file.
fn covers(event: &VmEvent) -> &'static str {
    match event {
        VmEvent::VmCreated {
            vm_id: _,
            spec:
                VmSpec {
                    name: _,
                    description: _,
                    cpu: _,
                    memory: _,
                    disk: _,
                    os: _,
                    network:
                        NetworkSpec {
                            mode: _,
                            ports: _,
                            bridge: _,
                        },
                    cloud_init: _,
                    boot_order: _,
                },
            owner: Owner { id: _, name: _ },
            image_present: _,
            job_id: _,
        } => "VmCreated",
        VmEvent::VmProvisioned { job_id: _ } => "VmProvisioned",
        VmEvent::StartRequested { job_id: _ } => "StartRequested",
        VmEvent::VmStarted {
            job_id: _,
            pid: _,
            process_start: _,
            accel: _,
        } => "VmStarted",
        VmEvent::StopRequested {
            job_id: _,
            force: _,
            timeout: _,
        } => "StopRequested",
        VmEvent::VmStopped {
            job_id: _,
            reason: _,
        } => "VmStopped",
        VmEvent::RestartRequested { job_id: _ } => "RestartRequested",
        VmEvent::VmRestarted {
            job_id: _,
            pid: _,
            process_start: _,
        } => "VmRestarted",
        VmEvent::PauseRequested { job_id: _ } => "PauseRequested",
        VmEvent::VmPaused { job_id: _ } => "VmPaused",
        VmEvent::ResumeRequested { job_id: _ } => "ResumeRequested",
        VmEvent::VmResumed { job_id: _ } => "VmResumed",
        VmEvent::ResetRequested { job_id: _ } => "ResetRequested",
        VmEvent::VmReset { job_id: _ } => "VmReset",
        VmEvent::VmOwnerChanged {
            from: Owner { id: _, name: _ },
            to: Owner { id: _, name: _ },
        } => "VmOwnerChanged",
        VmEvent::VmReconfigured {
            name: _,
            description: _,
            cpu: _,
            memory: _,
            network: _,
            cloud_init: _,
            boot_order: _,
            requires_restart: _,
        } => "VmReconfigured",
        VmEvent::IsoChangeRequested {
            job_id: _,
            image: _,
        } => "IsoChangeRequested",
        VmEvent::VmIsoChanged {
            job_id: _,
            image: _,
        } => "VmIsoChanged",
        VmEvent::SnapshotRequested {
            job_id: _,
            name: _,
            description: _,
            memory: _,
        } => "SnapshotRequested",
        VmEvent::SnapshotTaken {
            job_id: _,
            name: _,
            description: _,
            memory: _,
            created_at: _,
            vm_state_size: _,
        } => "SnapshotTaken",
        VmEvent::SnapshotRestoreRequested {
            job_id: _,
            name: _,
            memory: _,
        } => "SnapshotRestoreRequested",
        VmEvent::SnapshotRestored { job_id: _, name: _ } => "SnapshotRestored",
        VmEvent::SnapshotDeleteRequested { job_id: _, name: _ } => "SnapshotDeleteRequested",
        VmEvent::SnapshotDeleted { job_id: _, name: _ } => "SnapshotDeleted",
        VmEvent::DeleteRequested { job_id: _ } => "DeleteRequested",
        VmEvent::VmDeleted { job_id: _ } => "VmDeleted",
        VmEvent::VmCrashed {
            reason: _,
            job_id: _,
        } => "VmCrashed",
        VmEvent::OperationFailed {
            job_id: _,
            operation: _,
            reason: _,
            attempts: _,
        } => "OperationFailed",
        VmEvent::OperationRetried {
            job_id: _,
            operation: _,
            attempt: _,
            reason: _,
            retry_in_ms: _,
        } => "OperationRetried",
        VmEvent::JobCancelled { job_id: _ } => "JobCancelled",
        VmEvent::StaleObservationIgnored {
            pid: _,
            process_start: _,
            observation: _,
            reason: _,
            current_pid: _,
        } => "StaleObservationIgnored",
        VmEvent::ConsoleOpened {
            console: _,
            session_id: _,
        } => "ConsoleOpened",
        VmEvent::ConsoleClosed {
            console: _,
            session_id: _,
        } => "ConsoleClosed",
    }
}

fn spec(description: Option<&str>) -> VmSpec {
    VmSpec {
        name: "web-1".into(),
        description: description.map(String::from),
        cpu: 2,
        memory: 2048,
        disk: 20,
        os: "busybox".into(),
        network: NetworkSpec {
            mode: NetworkMode::User,
            ports: vec![PortForward {
                guest: 80,
                host: 20080,
                protocol: Protocol::Tcp,
            }],
            bridge: None,
        },
        cloud_init: description.map(|_| cloud_init()),
        boot_order: vec![BootDevice::Cdrom, BootDevice::Disk],
    }
}

fn cloud_init() -> CloudInitSpec {
    CloudInitSpec {
        hostname: Some("web-1".into()),
        users: vec![
            CloudUser {
                name: "root".into(),
                ssh_authorized_keys: vec!["ssh-ed25519 AAAA root@host".into()],
                password_set: true,
            },
            CloudUser {
                name: "alice".into(),
                ssh_authorized_keys: vec![],
                password_set: false,
            },
        ],
        user_data_set: true,
        network_config: Some("version: 2\n".into()),
    }
}

fn snapshot_name(name: &str) -> SnapshotName {
    SnapshotName::parse(name).expect("a valid snapshot name")
}

fn owner() -> Owner {
    Owner {
        id: "u-1".into(),
        name: "admin".into(),
    }
}

fn job() -> String {
    "job-1".into()
}

/// Samples of every variant: each Option both `Some` and `None`, each bool both ways, numbers at
/// their edges.
fn samples() -> Vec<VmEvent> {
    let mut all = vec![
        VmEvent::VmCreated {
            vm_id: "vm-1".into(),
            spec: spec(Some("a web server")),
            owner: owner(),
            image_present: true,
            job_id: job(),
        },
        VmEvent::VmCreated {
            vm_id: "vm-2".into(),
            spec: spec(None),
            owner: owner(),
            image_present: false,
            job_id: job(),
        },
        VmEvent::VmProvisioned { job_id: job() },
        VmEvent::StartRequested { job_id: job() },
        VmEvent::VmStarted {
            job_id: job(),
            pid: 4242,
            process_start: Some(123_456),
            accel: "kvm".into(),
        },
        VmEvent::VmStarted {
            job_id: job(),
            pid: u32::MAX,
            process_start: None,
            accel: "tcg".into(),
        },
        VmEvent::StopRequested {
            job_id: job(),
            force: false,
            timeout: 30,
        },
        VmEvent::StopRequested {
            job_id: job(),
            force: true,
            timeout: u64::MAX,
        },
        VmEvent::VmStopped {
            job_id: Some(job()),
            reason: "stopped on request".into(),
        },
        VmEvent::VmStopped {
            job_id: None,
            reason: "guest powered off".into(),
        },
        VmEvent::RestartRequested { job_id: job() },
        VmEvent::VmRestarted {
            job_id: job(),
            pid: 0,
            process_start: Some(u64::MAX),
        },
        VmEvent::VmRestarted {
            job_id: job(),
            pid: 7,
            process_start: None,
        },
        VmEvent::PauseRequested { job_id: job() },
        VmEvent::VmPaused {
            job_id: Some(job()),
        },
        VmEvent::VmPaused { job_id: None },
        VmEvent::ResumeRequested { job_id: job() },
        VmEvent::VmResumed {
            job_id: Some(job()),
        },
        VmEvent::VmResumed { job_id: None },
        VmEvent::ResetRequested { job_id: job() },
        VmEvent::VmReset { job_id: job() },
        VmEvent::VmOwnerChanged {
            from: owner(),
            to: Owner {
                id: "user-2".into(),
                name: "bob".into(),
            },
        },
        VmEvent::VmReconfigured {
            name: Some("web-2".into()),
            description: Some("renamed".into()),
            cpu: Some(4),
            memory: Some(4096),
            network: Some(NetworkSpec {
                mode: NetworkMode::Bridge,
                ports: vec![],
                bridge: Some("br-voidvm".into()),
            }),
            cloud_init: Some(cloud_init()),
            boot_order: Some(vec![BootDevice::Network]),
            requires_restart: true,
        },
        VmEvent::VmReconfigured {
            name: None,
            description: None,
            cpu: None,
            memory: None,
            network: None,
            cloud_init: None,
            boot_order: None,
            requires_restart: false,
        },
        VmEvent::IsoChangeRequested {
            job_id: job(),
            image: Some("tools".into()),
        },
        VmEvent::IsoChangeRequested {
            job_id: job(),
            image: None,
        },
        VmEvent::VmIsoChanged {
            job_id: job(),
            image: Some("tools".into()),
        },
        VmEvent::VmIsoChanged {
            job_id: job(),
            image: None,
        },
        VmEvent::SnapshotRequested {
            job_id: job(),
            name: snapshot_name("before-upgrade"),
            description: Some("before the upgrade".into()),
            memory: true,
        },
        VmEvent::SnapshotRequested {
            job_id: job(),
            name: snapshot_name(&"x".repeat(63)),
            description: None,
            memory: false,
        },
        VmEvent::SnapshotTaken {
            job_id: job(),
            name: snapshot_name("v1.2_final"),
            description: Some("before the upgrade".into()),
            memory: true,
            created_at: chrono::DateTime::from_timestamp(1_800_000_000, 123_456_789)
                .expect("a time"),
            vm_state_size: u64::MAX,
        },
        VmEvent::SnapshotTaken {
            job_id: job(),
            name: snapshot_name("0a"),
            description: None,
            memory: false,
            created_at: chrono::DateTime::from_timestamp(0, 0).expect("a time"),
            vm_state_size: 0,
        },
        VmEvent::SnapshotRestoreRequested {
            job_id: job(),
            name: snapshot_name("snap-1"),
            memory: true,
        },
        VmEvent::SnapshotRestoreRequested {
            job_id: job(),
            name: snapshot_name("snap-1"),
            memory: false,
        },
        VmEvent::SnapshotRestored {
            job_id: job(),
            name: snapshot_name("snap-1"),
        },
        VmEvent::SnapshotDeleteRequested {
            job_id: job(),
            name: snapshot_name("snap-1"),
        },
        VmEvent::SnapshotDeleted {
            job_id: job(),
            name: snapshot_name("snap-1"),
        },
        VmEvent::DeleteRequested { job_id: job() },
        VmEvent::VmDeleted { job_id: job() },
        VmEvent::VmCrashed {
            reason: "QEMU exited with signal 9".into(),
            job_id: Some(job()),
        },
        VmEvent::VmCrashed {
            reason: "QEMU exited with signal 9".into(),
            job_id: None,
        },
        VmEvent::JobCancelled { job_id: job() },
        VmEvent::StaleObservationIgnored {
            pid: 4242,
            process_start: Some(0),
            observation: ObservationKind::Exited,
            reason: Some("guest powered off".into()),
            current_pid: Some(u32::MAX),
        },
        VmEvent::StaleObservationIgnored {
            pid: u32::MAX,
            process_start: None,
            observation: ObservationKind::Paused,
            reason: None,
            current_pid: None,
        },
        VmEvent::StaleObservationIgnored {
            pid: 1,
            process_start: Some(1),
            observation: ObservationKind::Resumed,
            reason: None,
            current_pid: Some(2),
        },
    ];
    for console in [ConsoleKind::Serial, ConsoleKind::Vnc] {
        all.push(VmEvent::ConsoleOpened {
            console,
            session_id: "con-1".into(),
        });
        all.push(VmEvent::ConsoleClosed {
            console,
            session_id: "con-1".into(),
        });
    }
    let operations = Operation::ALL;
    for (attempts, operation) in (0..).zip(operations) {
        all.push(VmEvent::OperationFailed {
            job_id: job(),
            operation,
            reason: format!("{operation} failed"),
            attempts,
        });
    }
    all.push(VmEvent::OperationRetried {
        job_id: job(),
        operation: Operation::Start,
        attempt: 1,
        reason: "The QMP socket is not up yet.".into(),
        retry_in_ms: 500,
    });
    all.push(VmEvent::OperationRetried {
        job_id: job(),
        operation: Operation::Stop,
        attempt: u32::MAX,
        reason: String::new(),
        retry_in_ms: u64::MAX,
    });
    all
}

#[test]
fn every_event_validates_against_the_schema_of_its_current_version() {
    let samples = samples();
    let mut seen = BTreeSet::new();
    for event in &samples {
        assert_eq!(covers(event), event.type_name());
        seen.insert(event.type_name());

        let payload = serde_json::to_value(event)
            .unwrap_or_else(|e| panic!("{} does not serialise: {e}", event.type_name()));
        assert_valid(event.type_name(), event.version(), &payload);

        // What is stored reads back as the same event.
        let back: VmEvent = serde_json::from_value(payload.clone())
            .unwrap_or_else(|e| panic!("{payload} does not deserialise: {e}"));
        assert_eq!(&back, event, "{} does not round-trip", event.type_name());
    }
    let all: BTreeSet<&str> = VmEvent::TYPE_NAMES.into_iter().collect();
    assert_eq!(
        all.len(),
        VmEvent::TYPE_NAMES.len(),
        "TYPE_NAMES repeats a name"
    );
    assert_eq!(seen, all, "the samples do not cover every event type");
}

#[test]
fn the_schema_files_are_exactly_the_current_and_old_versions() {
    let versions: BTreeMap<&str, u32> = samples()
        .iter()
        .map(|e| (e.type_name(), e.version()))
        .collect();
    let mut expected = BTreeSet::new();
    for name in VmEvent::TYPE_NAMES {
        let version = versions
            .get(name)
            .unwrap_or_else(|| panic!("no sample of {name}, so its version is unknown"));
        expected.insert(schema_file(name, *version));
    }
    for (name, version) in OLD_VERSIONS {
        assert!(
            VmEvent::TYPE_NAMES.contains(name),
            "old version of unknown type {name}"
        );
        assert!(
            *version < versions[name],
            "{name} v{version} is listed as old but is the current version"
        );
        expected.insert(schema_file(name, *version));
    }

    for (name, _) in account_samples() {
        expected.insert(schema_file(name, 1));
    }

    let dir = schema_dir();
    let found: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("directory entry")
                .file_name()
                .into_string()
                .expect("UTF-8 file name")
        })
        .collect();
    let missing: Vec<_> = expected.difference(&found).collect();
    let stray: Vec<_> = found.difference(&expected).collect();
    assert!(
        missing.is_empty() && stray.is_empty(),
        "schemas/events/ is out of step with the code: missing {missing:?}, stray {stray:?}"
    );
}

#[test]
fn every_schema_file_is_well_formed_and_names_its_event() {
    let mut files: Vec<(&str, u32)> = samples()
        .iter()
        .map(|e| (e.type_name(), e.version()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    files.extend_from_slice(OLD_VERSIONS);
    for (name, version) in files {
        let file = schema_file(name, version);
        let schema = load_schema(name, version);
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("{file} is not a valid JSON Schema: {e}");
        }
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{file}: $schema"
        );
        assert_eq!(
            schema["$id"],
            format!("https://voidvm.dev/schemas/events/{file}"),
            "{file}: $id"
        );
        for key in ["title", "description"] {
            assert!(
                schema[key].as_str().is_some_and(|s| !s.is_empty()),
                "{file}: no {key}"
            );
        }
        assert_eq!(schema["required"], json!([name]), "{file}: required");
        assert_eq!(
            schema["additionalProperties"],
            json!(false),
            "{file}: additionalProperties"
        );
        let properties = schema["properties"].as_object();
        assert!(
            properties.is_some_and(|p| p.len() == 1 && p.contains_key(name)),
            "{file}: the only property must be {name}"
        );
        // Every object in the schema is closed and requires all of its properties.
        let mut objects = vec![&schema["properties"][name]];
        while let Some(object) = objects.pop() {
            assert_eq!(object["type"], "object", "{file}: {object}");
            assert_eq!(
                object["additionalProperties"],
                json!(false),
                "{file}: an open object"
            );
            let props = object["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{file}: an object without properties"));
            let required: BTreeSet<&str> = object["required"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: an object without required"))
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let declared: BTreeSet<&str> = props.keys().map(String::as_str).collect();
            assert_eq!(required, declared, "{file}: required is not every property");
            objects.extend(props.values().filter(|p| p["type"] == "object"));
        }
    }
}

#[test]
fn a_stored_v1_operation_failed_validates_and_upcasts_to_v2() {
    let payload = json!({"OperationFailed": {
        "jobId": "job-1",
        "operation": "start",
        "reason": "QEMU did not start",
    }});
    assert_valid("OperationFailed", 1, &payload);
    assert_invalid(
        "OperationFailed",
        2,
        &payload,
        "v1 has no attempts, v2 requires it",
    );

    let stored = SerializedEvent {
        aggregate_id: "vm-1".into(),
        sequence: 3,
        aggregate_type: "vm".into(),
        event_type: "OperationFailed".into(),
        event_version: "1".into(),
        payload,
        metadata: json!({}),
    };
    let upcaster = OperationFailedV1ToV2;
    assert!(upcaster.can_upcast(&stored.event_type, &stored.event_version));
    let upcast = upcaster.upcast(stored);
    assert_eq!(upcast.event_version, "2");
    assert_valid("OperationFailed", 2, &upcast.payload);
    assert_invalid(
        "OperationFailed",
        1,
        &upcast.payload,
        "v1 does not know attempts",
    );

    let event: VmEvent = serde_json::from_value(upcast.payload.clone())
        .unwrap_or_else(|e| panic!("upcast {} does not deserialise: {e}", upcast.payload));
    assert_eq!(
        event,
        VmEvent::OperationFailed {
            job_id: "job-1".into(),
            operation: Operation::Start,
            reason: "QEMU did not start".into(),
            attempts: 1,
        }
    );
    assert_eq!(
        event.version().to_string(),
        to_current(upcast).event_version
    );
}

/// An event read through every upcaster, oldest change first, as the store reads it.
fn to_current(mut event: SerializedEvent) -> SerializedEvent {
    for up in voidvm::store::upcasters::all() {
        if up.can_upcast(&event.event_type, &event.event_version) {
            event = up.upcast(event);
        }
    }
    event
}

#[test]
fn operations_before_media_read_unchanged_and_media_needs_the_new_versions() {
    for (name, old, new, fields) in [
        (
            "OperationFailed",
            "2",
            "3",
            json!({"jobId": "j", "operation": "start", "reason": "r", "attempts": 1}),
        ),
        (
            "OperationRetried",
            "1",
            "2",
            json!({"jobId": "j", "operation": "start", "attempt": 1, "reason": "r", "retryInMs": 10}),
        ),
    ] {
        let payload = json!({ name: fields });
        let (old_n, new_n) = (old.parse().unwrap(), new.parse().unwrap());
        assert_valid(name, old_n, &payload);
        let mut media = payload.clone();
        media[name]["operation"] = json!("media");
        assert_invalid(
            name,
            old_n,
            &media,
            "the old version has no media operation",
        );
        assert_valid(name, new_n, &media);
        let up = MediaOperation {
            event_type: name,
            from: old,
            to: new,
        };
        let stored = SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 3,
            aggregate_type: "vm".into(),
            event_type: name.into(),
            event_version: old.into(),
            payload: payload.clone(),
            metadata: json!({}),
        };
        assert!(up.can_upcast(name, old) && !up.can_upcast(name, new));
        let upcast = up.upcast(stored);
        assert_eq!(
            (upcast.event_version.as_str(), &upcast.payload),
            (new, &payload)
        );
        let event: VmEvent = serde_json::from_value(upcast.payload.clone()).expect("it reads");
        assert_eq!(
            event.version().to_string(),
            to_current(upcast).event_version
        );
    }
}

#[test]
fn stored_v1_starts_validate_and_upcast_to_v2() {
    for (name, fields) in [
        (
            "VmStarted",
            json!({"jobId": "job-1", "pid": 42, "accel": "tcg"}),
        ),
        ("VmRestarted", json!({"jobId": "job-1", "pid": 42})),
    ] {
        let payload = json!({ name: fields });
        assert_valid(name, 1, &payload);
        assert_invalid(name, 2, &payload, "v1 has no processStart, v2 requires it");
        let stored = SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 3,
            aggregate_type: "vm".into(),
            event_type: name.into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
        };
        let upcaster = ProcessStartV1ToV2(name);
        assert!(upcaster.can_upcast(&stored.event_type, &stored.event_version));
        let upcast = upcaster.upcast(stored);
        assert_eq!(upcast.event_version, "2");
        assert_valid(name, 2, &upcast.payload);
        assert_invalid(name, 1, &upcast.payload, "v1 does not know processStart");
        let event: VmEvent = serde_json::from_value(upcast.payload.clone())
            .unwrap_or_else(|e| panic!("upcast {} does not deserialise: {e}", upcast.payload));
        assert_eq!(event.type_name(), name);
        assert_eq!(event.version().to_string(), upcast.event_version);
    }
}

#[test]
fn stored_v1_creations_and_changes_validate_and_upcast_to_v2() {
    let created = json!({"VmCreated": {"vmId": "vm-1", "spec": {"name": "a", "description": null,
        "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"},
        "owner": {"id": "u", "name": "u"}, "imagePresent": true, "jobId": "job-1"}});
    let changed = json!({"VmReconfigured": {"name": "b", "description": null, "cpu": null,
        "memory": null, "requiresRestart": false}});
    let upcasters: [(&str, Value, Box<dyn EventUpcaster>); 2] = [
        ("VmCreated", created, Box::new(VmCreatedV1ToV2)),
        ("VmReconfigured", changed, Box::new(VmReconfiguredV1ToV2)),
    ];
    for (name, payload, upcaster) in upcasters {
        assert_valid(name, 1, &payload);
        assert_invalid(name, 2, &payload, "v1 has no network, v2 requires it");
        let stored = SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 1,
            aggregate_type: "vm".into(),
            event_type: name.into(),
            event_version: "1".into(),
            payload,
            metadata: json!({}),
        };
        assert!(upcaster.can_upcast(&stored.event_type, &stored.event_version));
        let upcast = upcaster.upcast(stored);
        assert_eq!(upcast.event_version, "2");
        assert_valid(name, 2, &upcast.payload);
        let upcast = if name == "VmCreated" {
            VmCreatedV2ToV3.upcast(upcast)
        } else {
            VmReconfiguredV2ToV3.upcast(upcast)
        };
        assert_eq!(upcast.event_version, "3");
        assert_valid(name, 3, &upcast.payload);
        let upcast = NetworkBridgeV3ToV4(name).upcast(upcast);
        assert_eq!(upcast.event_version, "4");
        assert_valid(name, 4, &upcast.payload);
        let event: VmEvent = serde_json::from_value(upcast.payload.clone())
            .unwrap_or_else(|e| panic!("upcast {} does not deserialise: {e}", upcast.payload));
        assert_eq!(event.version().to_string(), upcast.event_version);
        match event {
            VmEvent::VmCreated { spec, .. } => assert_eq!(
                spec.network,
                NetworkSpec {
                    mode: NetworkMode::User,
                    ports: vec![],
                    bridge: None,
                }
            ),
            VmEvent::VmReconfigured { network, .. } => assert_eq!(network, None),
            other => panic!("{name} read as {other:?}"),
        }
    }
}

#[test]
fn the_schemas_reject_payloads_of_another_shape() {
    let created = serde_json::to_value(&samples()[0]).expect("VmCreated serialises");
    assert_valid("VmCreated", 4, &created);

    let mut extra = created.clone();
    extra["VmCreated"]["color"] = json!("blue");
    assert_invalid("VmCreated", 4, &extra, "an extra field");

    let mut missing = created.clone();
    missing["VmCreated"]
        .as_object_mut()
        .expect("VmCreated fields")
        .remove("imagePresent");
    assert_invalid("VmCreated", 4, &missing, "a missing field");

    let mut null_description_missing = created.clone();
    null_description_missing["VmCreated"]["spec"]
        .as_object_mut()
        .expect("spec fields")
        .remove("description");
    assert_invalid(
        "VmCreated",
        1,
        &null_description_missing,
        "an Option field left out instead of null",
    );

    let mut nested_extra = created.clone();
    nested_extra["VmCreated"]["owner"]["email"] = json!("a@b.c");
    assert_invalid("VmCreated", 4, &nested_extra, "an extra field in owner");

    let mut negative = created.clone();
    negative["VmCreated"]["spec"]["cpu"] = json!(-1);
    assert_invalid("VmCreated", 4, &negative, "a negative u32");

    let mut snake = created.clone();
    let fields = snake["VmCreated"]
        .as_object_mut()
        .expect("VmCreated fields");
    let vm_id = fields.remove("vmId").expect("vmId");
    fields.insert("vm_id".into(), vm_id);
    assert_invalid("VmCreated", 4, &snake, "a snake_case field name");

    let mut second_event = created.clone();
    second_event["VmDeleted"] = json!({"jobId": "job-1"});
    assert_invalid("VmCreated", 4, &second_event, "a second top-level tag");

    let mut bridge = created.clone();
    bridge["VmCreated"]["spec"]["network"]["mode"] = json!("bridge");
    bridge["VmCreated"]["spec"]["network"]["ports"] = json!([]);
    bridge["VmCreated"]["spec"]["network"]["bridge"] = json!("br-voidvm");
    assert_valid("VmCreated", 4, &bridge);
    assert_invalid("VmCreated", 3, &bridge, "v3 records no bridge");
    let mut unknown_mode = created.clone();
    unknown_mode["VmCreated"]["spec"]["network"]["mode"] = json!("vde");
    assert_invalid("VmCreated", 4, &unknown_mode, "an unknown network mode");
    let mut port_too_big = created.clone();
    port_too_big["VmCreated"]["spec"]["network"]["ports"][0]["guest"] = json!(70000);
    assert_invalid("VmCreated", 4, &port_too_big, "a port above 65535");

    let unknown_operation = json!({"OperationFailed": {
        "jobId": "job-1",
        "operation": "explode",
        "reason": "r",
        "attempts": 1,
    }});
    assert_invalid(
        "OperationFailed",
        4,
        &unknown_operation,
        "an unknown operation",
    );

    let bad_name = json!({"SnapshotDeleted": {"jobId": "job-1", "name": "-rf"}});
    assert_invalid("SnapshotDeleted", 1, &bad_name, "a name starting with '-'");
    let id_like = json!({"SnapshotDeleted": {"jobId": "job-1", "name": "12"}});
    assert_invalid("SnapshotDeleted", 1, &id_like, "a name of digits only");
    let long = json!({"SnapshotDeleted": {"jobId": "job-1", "name": "x".repeat(64)}});
    assert_invalid("SnapshotDeleted", 1, &long, "a name over 63 characters");
}

#[test]
fn operations_before_snapshots_read_unchanged_and_snapshot_needs_the_new_versions() {
    for (name, old, new, fields) in [
        (
            "OperationFailed",
            "3",
            "4",
            json!({"jobId": "j", "operation": "media", "reason": "r", "attempts": 1}),
        ),
        (
            "OperationRetried",
            "2",
            "3",
            json!({"jobId": "j", "operation": "media", "attempt": 1, "reason": "r", "retryInMs": 10}),
        ),
    ] {
        let payload = json!({ name: fields });
        let (old_n, new_n) = (old.parse().unwrap(), new.parse().unwrap());
        assert_valid(name, old_n, &payload);
        let mut snapshot = payload.clone();
        snapshot[name]["operation"] = json!("snapshot");
        assert_invalid(
            name,
            old_n,
            &snapshot,
            "the old version has no snapshot operation",
        );
        assert_valid(name, new_n, &snapshot);
        let up = MediaOperation {
            event_type: name,
            from: old,
            to: new,
        };
        let stored = SerializedEvent {
            aggregate_id: "vm-1".into(),
            sequence: 3,
            aggregate_type: "vm".into(),
            event_type: name.into(),
            event_version: old.into(),
            payload: payload.clone(),
            metadata: json!({}),
        };
        assert!(up.can_upcast(name, old) && !up.can_upcast(name, new));
        let upcast = up.upcast(stored);
        assert_eq!(
            (upcast.event_version.as_str(), &upcast.payload),
            (new, &payload)
        );
        let event: VmEvent = serde_json::from_value(upcast.payload).expect("it reads");
        assert_eq!(event.version().to_string(), new);
    }
}

/// Every account event (users, roles, the configuration) and webhook event at its current
/// version, as stored.
fn account_samples() -> Vec<(&'static str, Value)> {
    use voidvm::accounts::live::{LimitsPatch, SystemPatch};
    use voidvm::accounts::role::RoleChange;
    use voidvm::accounts::user::UserChange;
    use voidvm::accounts::{
        ConfigEvent, ConfigOverrides, QuotaOverrides, RoleEvent, UserEvent, UserStatus,
    };
    use voidvm::auth::permission::Scope;
    use voidvm::images::{ImageEvent, ImageKind};
    use voidvm::webhooks::{WebhookChange, WebhookEvent};
    let user = [
        UserEvent::UserCreated {
            username: "alice".into(),
            email: Some("alice@example.com".into()),
            role: "user".into(),
            quota: QuotaOverrides {
                vms: Some(3),
                ..QuotaOverrides::default()
            },
            rate_limit: None,
        },
        UserEvent::UserChanged(UserChange {
            email: Some(None),
            status: Some(UserStatus::Disabled),
            rate_limit: Some(Some(10)),
            ..UserChange::default()
        }),
        UserEvent::UserPasswordChanged { by_admin: true },
        UserEvent::UserDeleted {
            transferred_to: Some("user-2".into()),
        },
    ];
    let role = [
        RoleEvent::RoleCreated {
            name: "Operator".into(),
            description: "Starts and stops".into(),
            permissions: vec!["vm:read".into(), "vm:start".into()],
            scope: Scope::All,
            rate_limit: Some(500),
        },
        RoleEvent::RoleChanged(RoleChange {
            rate_limit: Some(None),
            ..RoleChange::default()
        }),
        RoleEvent::RoleDeleted {},
    ];
    let config = ConfigEvent::ConfigChanged {
        changes: ConfigOverrides {
            system: SystemPatch {
                max_vms_per_user: Some(Some(10)),
                ..SystemPatch::default()
            },
            limits: LimitsPatch {
                requests_per_minute: Some(None),
                ..LimitsPatch::default()
            },
        },
    };
    let mut all: Vec<(&'static str, Value)> = Vec::new();
    all.extend(
        user.iter()
            .map(|e| (e.type_name(), serde_json::to_value(e).expect("json"))),
    );
    all.extend(
        role.iter()
            .map(|e| (e.type_name(), serde_json::to_value(e).expect("json"))),
    );
    all.push((
        config.type_name(),
        serde_json::to_value(&config).expect("json"),
    ));
    let webhook = [
        WebhookEvent::WebhookCreated {
            owner_id: "user-1".into(),
            url: "https://hooks.example.com/voidvm".into(),
            events: vec!["VmStarted".into(), "VmStopped".into()],
            active: true,
        },
        WebhookEvent::WebhookChanged(WebhookChange {
            active: Some(false),
            secret_changed: true,
            ..WebhookChange::default()
        }),
        WebhookEvent::WebhookDeleted {},
        WebhookEvent::WebhookDeliveryRequeued {
            delivery_id: 7,
            position: 42,
        },
    ];
    all.extend(
        webhook
            .iter()
            .map(|e| (e.type_name(), serde_json::to_value(e).expect("json"))),
    );
    let sha = "ab".repeat(32);
    let image = [
        ImageEvent::ImageImportRequested {
            job_id: "job-1".into(),
            kind: ImageKind::Disk,
            url: "https://images.example.com/debian.raw".into(),
            format: Some("raw".into()),
            sha256: None,
        },
        ImageEvent::ImageImportProgressed {
            job_id: "job-1".into(),
            bytes_done: 1024,
            bytes_total: None,
        },
        ImageEvent::ImageImported {
            job_id: "job-1".into(),
            sha256: sha.clone(),
            size_bytes: 4096,
        },
        ImageEvent::ImageImportFailed {
            job_id: "job-2".into(),
            reason: "The server answered HTTP 404.".into(),
        },
        ImageEvent::ImageImportCancelled {
            job_id: "job-3".into(),
        },
        ImageEvent::ImageUploaded {
            kind: ImageKind::Kernel,
            format: None,
            sha256: sha,
            size_bytes: 4096,
        },
        ImageEvent::ImageDeleted {},
    ];
    all.extend(
        image
            .iter()
            .map(|e| (e.type_name(), serde_json::to_value(e).expect("json"))),
    );
    let names: BTreeSet<&str> = all.iter().map(|(n, _)| *n).collect();
    let known: BTreeSet<&str> = UserEvent::TYPE_NAMES
        .into_iter()
        .chain(RoleEvent::TYPE_NAMES)
        .chain(ConfigEvent::TYPE_NAMES)
        .chain(WebhookEvent::TYPE_NAMES)
        .chain(ImageEvent::TYPE_NAMES)
        .collect();
    assert_eq!(
        names, known,
        "the samples do not cover every account event type"
    );
    all
}

#[test]
fn every_account_event_validates_against_its_schema_and_holds_no_secret() {
    for (name, payload) in account_samples() {
        assert_valid(name, 1, &payload);
        let text = payload.to_string();
        assert!(
            !text.contains("password\"") && !text.contains("secret\""),
            "{name} names a password or secret field: {text}"
        );
    }
}
