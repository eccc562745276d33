//! Given/when/then tests for the VM's disk snapshots: one test per rule of the aggregate and of
//! the snapshot table, plus an independent restatement of that table.

use chrono::{DateTime, Utc};

use super::snapshots::{snapshot_rule, SnapshotNameError};
use super::tests::{history, state_after, VmTest};
use super::*;

fn name(n: &str) -> SnapshotName {
    SnapshotName::parse(n).expect("a valid name")
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
}

fn requested(job: &str, n: &str, memory: bool) -> VmEvent {
    VmEvent::SnapshotRequested {
        job_id: job.into(),
        name: name(n),
        description: Some("before the upgrade".into()),
        memory,
    }
}

fn taken(job: &str, n: &str, memory: bool) -> VmEvent {
    VmEvent::SnapshotTaken {
        job_id: job.into(),
        name: name(n),
        description: Some("before the upgrade".into()),
        memory,
        created_at: at(),
        vm_state_size: if memory { 4096 } else { 0 },
    }
}

/// A VM in `status` that has snapshot `n` (taken while it ran when `memory`).
fn with_snapshot(status: VmStatus, n: &str, memory: bool) -> Vec<VmEvent> {
    [
        history(status),
        vec![requested("job-s", n, memory), taken("job-s", n, memory)],
    ]
    .concat()
}

fn take(n: &str, memory: bool) -> VmCommand {
    VmCommand::TakeSnapshot {
        job_id: "job-new".into(),
        name: name(n),
        description: Some("before the upgrade".into()),
        memory,
    }
}

fn restore(n: &str) -> VmCommand {
    VmCommand::RestoreSnapshot {
        job_id: "job-new".into(),
        name: name(n),
    }
}

fn delete(n: &str) -> VmCommand {
    VmCommand::DeleteSnapshot {
        job_id: "job-new".into(),
        name: name(n),
    }
}

#[test]
fn snapshot_names_are_short_plain_tags() {
    for good in [
        "a",
        "before-upgrade",
        "v1.2_final",
        "0a",
        "2024-01-01",
        ".5",
        &"x".repeat(63),
    ] {
        assert!(SnapshotName::parse(good).is_ok(), "{good}");
    }
    assert_eq!(SnapshotName::parse(""), Err(SnapshotNameError::Length));
    assert_eq!(
        SnapshotName::parse(&"x".repeat(64)),
        Err(SnapshotNameError::Length)
    );
    for bad in ["a b", "a/b", "é", "a,b", "x;rm"] {
        assert_eq!(
            SnapshotName::parse(bad),
            Err(SnapshotNameError::Characters),
            "{bad}"
        );
    }
    assert_eq!(
        SnapshotName::parse("-a"),
        Err(SnapshotNameError::LeadingDash)
    );
    for id_like in ["0", "2", "0042"] {
        assert_eq!(
            SnapshotName::parse(id_like),
            Err(SnapshotNameError::OnlyDigits),
            "{id_like}"
        );
    }
    // A name read from the log is checked the same way.
    assert!(serde_json::from_str::<SnapshotName>("\"-a\"").is_err());
}

#[test]
fn a_snapshot_request_opens_a_snapshot_job() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(take("snap-1", true))
        .then_expect_events(vec![requested("job-new", "snap-1", true)]);
    let opened = requested("job-new", "snap-1", true);
    assert_eq!(
        opened.job_effect(),
        Some(JobEffect::Opens {
            job_id: "job-new",
            operation: Operation::Snapshot
        })
    );
}

#[test]
fn a_snapshot_job_keeps_the_status_and_makes_the_vm_busy() {
    let during = state_after(
        [
            history(VmStatus::Running),
            vec![requested("job-s", "snap-1", false)],
        ]
        .concat(),
    );
    assert_eq!(during.status, Some(VmStatus::Running));
    assert_eq!(
        during.decide(take("snap-2", false)),
        Err(VmError::Rejected {
            status: VmStatus::Running,
            operation: Operation::Snapshot,
            rejection: Rejection::Busy
        })
    );
    assert!(during
        .decide(VmCommand::Pause { job_id: "j".into() })
        .is_err());
}

#[test]
fn a_taken_snapshot_is_kept_with_the_status_it_was_taken_in() {
    let vm = state_after(with_snapshot(VmStatus::Paused, "snap-1", true));
    assert_eq!(vm.status, Some(VmStatus::Paused));
    assert!(vm.pending.is_none());
    assert_eq!(
        vm.snapshots,
        vec![VmSnapshot {
            name: name("snap-1"),
            description: Some("before the upgrade".into()),
            memory: true,
            created_at: at(),
            vm_status: VmStatus::Paused,
            vm_state_size: 4096,
        }]
    );
}

#[test]
fn the_worker_s_result_becomes_snapshot_taken() {
    VmTest::with(())
        .given(
            [
                history(VmStatus::Stopped),
                vec![requested("job-s", "snap-1", false)],
            ]
            .concat(),
        )
        .when(VmCommand::CompleteJob {
            job_id: "job-s".into(),
            result: JobResult::SnapshotTaken {
                name: name("snap-1"),
                description: Some("before the upgrade".into()),
                memory: false,
                created_at: at(),
                vm_state_size: 0,
            },
        })
        .then_expect_events(vec![taken("job-s", "snap-1", false)]);
}

#[test]
fn a_name_already_taken_is_refused() {
    VmTest::with(())
        .given(with_snapshot(VmStatus::Stopped, "snap-1", false))
        .when(take("snap-1", false))
        .then_expect_error(VmError::SnapshotExists {
            name: name("snap-1"),
        });
}

#[test]
fn an_unknown_snapshot_cannot_be_restored_or_deleted() {
    for command in [restore("nope"), delete("nope")] {
        VmTest::with(())
            .given(with_snapshot(VmStatus::Stopped, "snap-1", false))
            .when(command)
            .then_expect_error(VmError::SnapshotNotFound { name: name("nope") });
    }
}

#[test]
fn a_memory_snapshot_needs_a_running_vm() {
    VmTest::with(())
        .given(history(VmStatus::Stopped))
        .when(take("snap-1", true))
        .then_expect_error(VmError::SnapshotRefused {
            status: VmStatus::Stopped,
            rejection: Rejection::NotRunning,
        });
}

#[test]
fn a_disk_only_snapshot_is_restored_only_on_a_stopped_vm() {
    VmTest::with(())
        .given(with_snapshot(VmStatus::Running, "disk-1", false))
        .when(restore("disk-1"))
        .then_expect_error(VmError::SnapshotRefused {
            status: VmStatus::Running,
            rejection: Rejection::MustBeStopped,
        });
    let stopped = [with_snapshot(VmStatus::Stopped, "disk-1", false), vec![]].concat();
    VmTest::with(())
        .given(stopped)
        .when(restore("disk-1"))
        .then_expect_events(vec![VmEvent::SnapshotRestoreRequested {
            job_id: "job-new".into(),
            name: name("disk-1"),
            memory: false,
        }]);
}

#[test]
fn a_memory_snapshot_restores_on_a_running_vm_and_the_request_says_so() {
    VmTest::with(())
        .given(with_snapshot(VmStatus::Running, "mem-1", true))
        .when(restore("mem-1"))
        .then_expect_events(vec![VmEvent::SnapshotRestoreRequested {
            job_id: "job-new".into(),
            name: name("mem-1"),
            memory: true,
        }]);
}

#[test]
fn a_restored_snapshot_ends_the_job_and_keeps_the_status_and_the_list() {
    let events = [
        with_snapshot(VmStatus::Running, "mem-1", true),
        vec![
            VmEvent::SnapshotRestoreRequested {
                job_id: "job-r".into(),
                name: name("mem-1"),
                memory: true,
            },
            VmEvent::SnapshotRestored {
                job_id: "job-r".into(),
                name: name("mem-1"),
            },
        ],
    ]
    .concat();
    let vm = state_after(events);
    assert_eq!(vm.status, Some(VmStatus::Running));
    assert!(vm.pending.is_none());
    assert_eq!(vm.snapshots.len(), 1);
}

#[test]
fn a_deleted_snapshot_leaves_the_list() {
    VmTest::with(())
        .given(with_snapshot(VmStatus::Running, "snap-1", true))
        .when(delete("snap-1"))
        .then_expect_events(vec![VmEvent::SnapshotDeleteRequested {
            job_id: "job-new".into(),
            name: name("snap-1"),
        }]);
    let vm = state_after(
        [
            with_snapshot(VmStatus::Running, "snap-1", true),
            vec![
                VmEvent::SnapshotDeleteRequested {
                    job_id: "job-d".into(),
                    name: name("snap-1"),
                },
                VmEvent::SnapshotDeleted {
                    job_id: "job-d".into(),
                    name: name("snap-1"),
                },
            ],
        ]
        .concat(),
    );
    assert!(vm.snapshots.is_empty());
    assert!(vm.pending.is_none());
    assert_eq!(vm.status, Some(VmStatus::Running));
}

#[test]
fn a_failed_snapshot_job_leaves_the_vm_where_it_was() {
    let given = [
        history(VmStatus::Running),
        vec![requested("job-s", "snap-1", true)],
    ]
    .concat();
    let failed = state_after(given.clone())
        .decide(VmCommand::CompleteJob {
            job_id: "job-s".into(),
            result: JobResult::Failed {
                reason: "no space".into(),
                attempts: 1,
            },
        })
        .expect("the failure is recorded");
    let vm = state_after([given, failed].concat());
    assert_eq!(vm.status, Some(VmStatus::Running));
    assert_eq!(vm.status_reason.as_deref(), Some("no space"));
    assert!(vm.snapshots.is_empty());
    assert!(vm.pending.is_none());
}

#[test]
fn a_queued_snapshot_job_can_be_cancelled() {
    VmTest::with(())
        .given(
            [
                history(VmStatus::Stopped),
                vec![requested("job-s", "snap-1", false)],
            ]
            .concat(),
        )
        .when(VmCommand::CancelJob {
            job_id: "job-s".into(),
        })
        .then_expect_events(vec![VmEvent::JobCancelled {
            job_id: "job-s".into(),
        }]);
}

#[test]
fn another_job_s_result_does_not_end_a_snapshot_job() {
    VmTest::with(())
        .given(
            [
                history(VmStatus::Running),
                vec![requested("job-s", "snap-1", false)],
            ]
            .concat(),
        )
        .when(VmCommand::CompleteJob {
            job_id: "job-s".into(),
            result: JobResult::Paused,
        })
        .then_expect_error(VmError::ResultDoesNotFit {
            operation: Operation::Snapshot,
        });
}

#[test]
fn deleting_the_vm_forgets_its_snapshots() {
    let deleted = [
        with_snapshot(VmStatus::Stopped, "snap-1", false),
        vec![
            VmEvent::DeleteRequested {
                job_id: "job-9".into(),
            },
            VmEvent::VmDeleted {
                job_id: "job-9".into(),
            },
        ],
    ]
    .concat();
    let vm = state_after(deleted.clone());
    assert!(vm.snapshots.is_empty());
    VmTest::with(())
        .given(deleted)
        .when(restore("snap-1"))
        .then_expect_error(VmError::Rejected {
            status: VmStatus::Deleted,
            operation: Operation::Snapshot,
            rejection: Rejection::Gone,
        });
}

/// The snapshot table, restated by hand: `true` where the change is accepted.
#[test]
fn the_snapshot_table_matches_the_rules() {
    use SnapshotAction as A;
    use VmStatus as S;
    let actions = [
        A::Take { memory: false },
        A::Take { memory: true },
        A::Restore { memory: false },
        A::Restore { memory: true },
        A::Delete,
    ];
    for status in VmStatus::ALL {
        for action in actions {
            let running = matches!(status, S::Running | S::Paused);
            let off = matches!(status, S::Stopped | S::Crashed | S::Error);
            let expected = match action {
                A::Take { memory: true } => running,
                A::Restore { memory: false } => off,
                A::Take { memory: false } | A::Restore { memory: true } | A::Delete => {
                    running || off
                }
            };
            assert_eq!(
                snapshot_rule(status, action).is_ok(),
                expected,
                "{status} {action:?}"
            );
        }
    }
}

#[test]
fn every_snapshot_change_is_decided_by_the_table_in_every_status() {
    for status in VmStatus::ALL {
        for memory in [false, true] {
            let vm = state_after(history(status));
            let decided = vm.decide(take("new", memory)).is_ok();
            assert_eq!(
                decided,
                snapshot_rule(status, SnapshotAction::Take { memory }).is_ok(),
                "{status} take memory={memory}"
            );
        }
    }
}
