//! Given/when/then tests for the VM aggregate: one test per rule, plus an independent restatement
//! of the whole transition table.

use cqrs_es::test::TestFramework;

use super::aggregate::transitional;
use super::*;

pub(super) type VmTest = TestFramework<Vm>;

/// The VM's process in [`history`] (from its `VmStarted`).
const P1: MachineProcess = MachineProcess {
    pid: 42,
    start: Some(1_000),
};
/// The process a later start or restart replaces it with.
const P2: MachineProcess = MachineProcess {
    pid: 57,
    start: Some(2_000),
};

/// An observation about the VM's own process, [`P1`].
fn own(observed: Observed) -> VmCommand {
    VmCommand::Observe {
        process: Some(P1),
        observed,
    }
}

fn spec() -> VmSpec {
    VmSpec {
        name: "web-1".into(),
        description: None,
        cpu: 2,
        memory: 2048,
        disk: 20,
        os: "ubuntu20.04".into(),
        network: Default::default(),
        cloud_init: None,
        boot_order: Vec::new(),
    }
}

fn owner() -> Owner {
    Owner {
        id: "u-1".into(),
        name: "alice".into(),
    }
}

fn created() -> VmEvent {
    VmEvent::VmCreated {
        vm_id: "vm-1".into(),
        spec: spec(),
        owner: owner(),
        image_present: false,
        job_id: "job-0".into(),
    }
}

/// A history that leaves the VM in `status`.
pub(super) fn history(status: VmStatus) -> Vec<VmEvent> {
    use VmStatus as S;
    let job = |n: &str| n.to_string();
    let stopped = vec![
        created(),
        VmEvent::VmProvisioned {
            job_id: job("job-0"),
        },
    ];
    let starting = [
        stopped.clone(),
        vec![VmEvent::StartRequested {
            job_id: job("job-1"),
        }],
    ]
    .concat();
    let running = [
        starting.clone(),
        vec![VmEvent::VmStarted {
            job_id: job("job-1"),
            pid: P1.pid,
            process_start: P1.start,
            accel: "tcg".into(),
        }],
    ]
    .concat();
    let pausing = [
        running.clone(),
        vec![VmEvent::PauseRequested {
            job_id: job("job-2"),
        }],
    ]
    .concat();
    let paused = [
        pausing.clone(),
        vec![VmEvent::VmPaused {
            job_id: Some(job("job-2")),
        }],
    ]
    .concat();
    let deleting = [
        stopped.clone(),
        vec![VmEvent::DeleteRequested {
            job_id: job("job-9"),
        }],
    ]
    .concat();
    match status {
        S::Creating => vec![created()],
        S::Stopped => stopped,
        S::Starting => starting,
        S::Running => running,
        S::Stopping => [
            running,
            vec![VmEvent::StopRequested {
                job_id: job("job-3"),
                force: false,
                timeout: 30,
            }],
        ]
        .concat(),
        S::Pausing => pausing,
        S::Paused => paused,
        S::Resuming => [
            paused,
            vec![VmEvent::ResumeRequested {
                job_id: job("job-4"),
            }],
        ]
        .concat(),
        S::Rebooting => [
            running,
            vec![VmEvent::RestartRequested {
                job_id: job("job-5"),
            }],
        ]
        .concat(),
        S::Deleting => deleting,
        S::Deleted => [
            deleting,
            vec![VmEvent::VmDeleted {
                job_id: job("job-9"),
            }],
        ]
        .concat(),
        S::Error => [
            starting,
            vec![VmEvent::OperationFailed {
                job_id: job("job-1"),
                operation: Operation::Start,
                reason: "QEMU refused to start.".into(),
                attempts: 1,
            }],
        ]
        .concat(),
        S::Crashed => [
            running,
            vec![VmEvent::VmCrashed {
                reason: "killed".into(),
                job_id: None,
            }],
        ]
        .concat(),
    }
}

pub(super) fn state_after(events: Vec<VmEvent>) -> Vm {
    let mut vm = Vm::default();
    for e in events {
        cqrs_es::Aggregate::apply(&mut vm, e);
    }
    vm
}

fn command_for(op: Operation, job_id: &str) -> VmCommand {
    let job_id = job_id.to_string();
    match op {
        Operation::Provision => VmCommand::Create {
            vm_id: "vm-1".into(),
            spec: spec(),
            owner: owner(),
            image_present: false,
            job_id,
        },
        Operation::Start => VmCommand::Start { job_id },
        Operation::Stop => VmCommand::Stop {
            job_id,
            force: false,
            timeout: 30,
        },
        Operation::Restart => VmCommand::Restart { job_id },
        Operation::Pause => VmCommand::Pause { job_id },
        Operation::Resume => VmCommand::Resume { job_id },
        Operation::Reset => VmCommand::Reset { job_id },
        Operation::Delete => VmCommand::Delete { job_id },
        Operation::Media => VmCommand::ChangeIso {
            job_id,
            image: Some("tools".into()),
        },
        Operation::Snapshot => VmCommand::TakeSnapshot {
            job_id,
            name: SnapshotName::parse("snap-1").expect("a name"),
            description: None,
            memory: false,
        },
    }
}

#[test]
fn a_media_job_keeps_the_status_and_makes_the_vm_busy_until_it_ends() {
    let vm = state_after([history(VmStatus::Running), vec![]].concat());
    let events = vm
        .decide(command_for(Operation::Media, "job-iso"))
        .expect("accepted");
    let during = state_after([history(VmStatus::Running), events.clone()].concat());
    assert_eq!(during.status, Some(VmStatus::Running));
    assert!(during
        .decide(VmCommand::Stop {
            job_id: "j".into(),
            force: true,
            timeout: 0
        })
        .is_err());
    let done = during
        .decide(VmCommand::CompleteJob {
            job_id: "job-iso".into(),
            result: JobResult::IsoChanged {
                image: Some("tools".into()),
            },
        })
        .expect("the media job ends");
    let after = state_after([history(VmStatus::Running), events, done].concat());
    assert_eq!(after.status, Some(VmStatus::Running));
    assert_eq!(after.iso.as_deref(), Some("tools"));
    assert!(after.pending.is_none());
}

#[test]
fn a_failed_media_change_leaves_the_vm_where_it_was() {
    let vm = state_after(history(VmStatus::Running));
    let events = vm
        .decide(command_for(Operation::Media, "job-iso"))
        .expect("accepted");
    let during = state_after([history(VmStatus::Running), events.clone()].concat());
    let failed = during
        .decide(VmCommand::CompleteJob {
            job_id: "job-iso".into(),
            result: JobResult::Failed {
                reason: "no such device".into(),
                attempts: 1,
            },
        })
        .expect("the failure is recorded");
    let after = state_after([history(VmStatus::Running), events, failed].concat());
    assert_eq!(after.status, Some(VmStatus::Running));
    assert_eq!(after.iso, None);
    assert!(after.pending.is_none());
}

#[test]
fn every_history_reaches_its_status() {
    for status in VmStatus::ALL {
        assert_eq!(state_after(history(status)).status, Some(status));
    }
}

/// The lifecycle, restated by hand from the API contract: `Some(next)` where the operation is
/// accepted, `None` where it is refused. The aggregate must agree on every pair.
#[test]
fn the_transition_table_matches_the_contract() {
    use Operation as O;
    use VmStatus as S;
    let ops = [
        O::Start,
        O::Stop,
        O::Restart,
        O::Pause,
        O::Resume,
        O::Reset,
        O::Delete,
        O::Media,
        O::Snapshot,
    ];
    let accepted = |status: S, op: O| -> Option<S> {
        // The ISO medium and a disk-only snapshot change wherever the VM is settled, and the VM
        // stays there.
        if op == O::Media || op == O::Snapshot {
            return matches!(
                status,
                S::Stopped | S::Crashed | S::Error | S::Running | S::Paused
            )
            .then_some(status);
        }
        match status {
            S::Stopped | S::Crashed => match op {
                O::Start => Some(S::Starting),
                O::Delete => Some(S::Deleting),
                _ => None,
            },
            S::Error => match op {
                O::Start => Some(S::Starting),
                O::Stop => Some(S::Stopping),
                O::Delete => Some(S::Deleting),
                _ => None,
            },
            S::Running => match op {
                O::Stop => Some(S::Stopping),
                O::Restart | O::Reset => Some(S::Rebooting),
                O::Pause => Some(S::Pausing),
                _ => None,
            },
            S::Paused => match op {
                O::Stop => Some(S::Stopping),
                O::Restart => Some(S::Rebooting),
                O::Resume => Some(S::Resuming),
                _ => None,
            },
            _ => None,
        }
    };
    for status in VmStatus::ALL {
        for op in ops {
            let vm = state_after(history(status));
            let result = vm.decide(command_for(op, "job-new"));
            match accepted(status, op) {
                Some(next) => {
                    let events = result.unwrap_or_else(|e| panic!("{status} {op}: {e}"));
                    let after = state_after([history(status), events].concat());
                    assert_eq!(after.status, Some(next), "{status} {op}");
                    assert_eq!(transitional(op, status), next, "{status} {op}");
                }
                None => assert!(result.is_err(), "{status} {op} should be refused"),
            }
        }
    }
}

#[test]
fn create_records_the_vm_and_opens_a_provision_job() {
    VmTest::with(())
        .given_no_previous_events()
        .when(command_for(Operation::Provision, "job-0"))
        .then_expect_events(vec![created()]);
}

#[test]
fn create_twice_is_refused() {
    VmTest::with(())
        .given(vec![created()])
        .when(command_for(Operation::Provision, "job-x"))
        .then_expect_error(VmError::AlreadyExists);
}

#[test]
fn commands_on_a_vm_that_was_never_created_are_refused() {
    VmTest::with(())
        .given_no_previous_events()
        .when(VmCommand::Start { job_id: "j".into() })
        .then_expect_error(VmError::NotFound);
}

#[test]
fn start_from_stopped_is_requested() {
    VmTest::with(())
        .given(history(VmStatus::Stopped))
        .when(VmCommand::Start {
            job_id: "job-7".into(),
        })
        .then_expect_events(vec![VmEvent::StartRequested {
            job_id: "job-7".into(),
        }]);
}

#[test]
fn start_while_running_is_already_running() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Start {
            job_id: "job-7".into(),
        })
        .then_expect_error(VmError::Rejected {
            status: VmStatus::Running,
            operation: Operation::Start,
            rejection: Rejection::AlreadyRunning,
        });
}

#[test]
fn any_command_while_a_job_runs_is_busy() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::Stop {
            job_id: "job-7".into(),
            force: true,
            timeout: 0,
        })
        .then_expect_error(VmError::Rejected {
            status: VmStatus::Starting,
            operation: Operation::Stop,
            rejection: Rejection::Busy,
        });
}

#[test]
fn stop_carries_force_and_timeout() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Stop {
            job_id: "job-7".into(),
            force: true,
            timeout: 5,
        })
        .then_expect_events(vec![VmEvent::StopRequested {
            job_id: "job-7".into(),
            force: true,
            timeout: 5,
        }]);
}

#[test]
fn delete_while_running_must_stop_first() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Delete {
            job_id: "job-7".into(),
        })
        .then_expect_error(VmError::Rejected {
            status: VmStatus::Running,
            operation: Operation::Delete,
            rejection: Rejection::MustBeStopped,
        });
}

#[test]
fn a_deleted_vm_is_gone() {
    VmTest::with(())
        .given(history(VmStatus::Deleted))
        .when(VmCommand::Start {
            job_id: "job-7".into(),
        })
        .then_expect_error(VmError::Rejected {
            status: VmStatus::Deleted,
            operation: Operation::Start,
            rejection: Rejection::Gone,
        });
}

#[test]
fn a_successful_start_job_records_the_machine() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::CompleteJob {
            job_id: "job-1".into(),
            result: JobResult::Started {
                process: P2,
                accel: "tcg".into(),
            },
        })
        .then_expect_events(vec![VmEvent::VmStarted {
            job_id: "job-1".into(),
            pid: P2.pid,
            process_start: P2.start,
            accel: "tcg".into(),
        }]);
}

#[test]
fn a_failed_job_records_the_reason() {
    VmTest::with(())
        .given(history(VmStatus::Pausing))
        .when(VmCommand::CompleteJob {
            job_id: "job-2".into(),
            result: JobResult::Failed {
                reason: "QMP refused.".into(),
                attempts: 3,
            },
        })
        .then_expect_events(vec![VmEvent::OperationFailed {
            job_id: "job-2".into(),
            operation: Operation::Pause,
            reason: "QMP refused.".into(),
            attempts: 3,
        }]);
}

#[test]
fn a_retried_attempt_is_recorded_and_changes_nothing() {
    let retried = VmEvent::OperationRetried {
        job_id: "job-1".into(),
        operation: Operation::Start,
        attempt: 1,
        reason: "QMP is not up yet.".into(),
        retry_in_ms: 500,
    };
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::NoteRetry {
            job_id: "job-1".into(),
            attempt: 1,
            reason: "QMP is not up yet.".into(),
            retry_in_ms: 500,
        })
        .then_expect_events(vec![retried.clone()]);
    let before = state_after(history(VmStatus::Starting));
    let after = state_after([history(VmStatus::Starting), vec![retried]].concat());
    assert_eq!(before, after);
}

#[test]
fn a_retry_for_another_job_is_refused() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::NoteRetry {
            job_id: "job-old".into(),
            attempt: 1,
            reason: "r".into(),
            retry_in_ms: 1,
        })
        .then_expect_error(VmError::NotTheCurrentJob {
            job_id: "job-old".into(),
        });
}

#[test]
fn an_outcome_for_another_job_is_refused() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::CompleteJob {
            job_id: "job-old".into(),
            result: JobResult::Started {
                process: P2,
                accel: "tcg".into(),
            },
        })
        .then_expect_error(VmError::NotTheCurrentJob {
            job_id: "job-old".into(),
        });
}

#[test]
fn an_outcome_that_does_not_fit_the_job_is_refused() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::CompleteJob {
            job_id: "job-1".into(),
            result: JobResult::Deleted,
        })
        .then_expect_error(VmError::ResultDoesNotFit {
            operation: Operation::Start,
        });
}

#[test]
fn cancelling_a_queued_job_returns_to_the_previous_status() {
    let events = [
        history(VmStatus::Running),
        vec![VmEvent::PauseRequested {
            job_id: "job-p".into(),
        }],
    ]
    .concat();
    let cancelled = state_after(
        [
            events.clone(),
            vec![VmEvent::JobCancelled {
                job_id: "job-p".into(),
            }],
        ]
        .concat(),
    );
    assert_eq!(cancelled.status, Some(VmStatus::Running));
    assert_eq!(cancelled.pending, None);
    VmTest::with(())
        .given(events)
        .when(VmCommand::CancelJob {
            job_id: "job-p".into(),
        })
        .then_expect_events(vec![VmEvent::JobCancelled {
            job_id: "job-p".into(),
        }]);
}

#[test]
fn the_provision_job_cannot_be_cancelled() {
    VmTest::with(())
        .given(vec![created()])
        .when(VmCommand::CancelJob {
            job_id: "job-0".into(),
        })
        .then_expect_error(VmError::NotCancellable {
            job_id: "job-0".into(),
        });
}

#[test]
fn a_killed_machine_is_recorded_as_crashed() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(own(Observed::Exited {
            clean: false,
            reason: "killed".into(),
        }))
        .then_expect_events(vec![VmEvent::VmCrashed {
            reason: "killed".into(),
            job_id: None,
        }]);
}

#[test]
fn a_guest_power_off_is_recorded_as_stopped() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(own(Observed::Exited {
            clean: true,
            reason: "guest powered off".into(),
        }))
        .then_expect_events(vec![VmEvent::VmStopped {
            job_id: None,
            reason: "guest powered off".into(),
        }]);
}

#[test]
fn a_crash_during_a_job_fails_that_job() {
    VmTest::with(())
        .given(history(VmStatus::Pausing))
        .when(own(Observed::Exited {
            clean: false,
            reason: "killed".into(),
        }))
        .then_expect_events(vec![VmEvent::VmCrashed {
            reason: "killed".into(),
            job_id: Some("job-2".into()),
        }]);
}

#[test]
fn an_exit_during_a_stop_is_left_to_the_stop_job() {
    VmTest::with(())
        .given(history(VmStatus::Stopping))
        .when(own(Observed::Exited {
            clean: true,
            reason: "guest powered off".into(),
        }))
        .then_expect_events(vec![]);
}

#[test]
fn an_exit_during_a_restart_is_expected() {
    VmTest::with(())
        .given(history(VmStatus::Rebooting))
        .when(own(Observed::Exited {
            clean: true,
            reason: "quit".into(),
        }))
        .then_expect_events(vec![]);
}

#[test]
fn a_pause_nobody_asked_for_is_recorded() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(own(Observed::Paused))
        .then_expect_events(vec![VmEvent::VmPaused { job_id: None }]);
}

#[test]
fn the_resume_that_a_start_causes_records_nothing() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(own(Observed::Resumed))
        .then_expect_events(vec![]);
}

#[test]
fn reconfiguring_a_running_vm_needs_a_restart() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Reconfigure(Reconfiguration {
            memory: Some(4096),
            ..Default::default()
        }))
        .then_expect_events(vec![VmEvent::VmReconfigured {
            name: None,
            description: None,
            cpu: None,
            memory: Some(4096),
            network: None,
            cloud_init: None,
            boot_order: None,
            requires_restart: true,
        }]);
}

fn forwarded(guest: u16, host: u16) -> crate::vm::NetworkSpec {
    crate::vm::NetworkSpec {
        mode: crate::vm::NetworkMode::User,
        ports: vec![crate::vm::PortForward {
            guest,
            host,
            protocol: crate::vm::Protocol::Tcp,
        }],
        bridge: None,
    }
}

#[test]
fn a_network_change_needs_a_restart_only_when_running() {
    for (status, requires_restart) in [(VmStatus::Running, true), (VmStatus::Stopped, false)] {
        VmTest::with(())
            .given(history(status))
            .when(VmCommand::Reconfigure(Reconfiguration {
                network: Some(forwarded(80, 20080)),
                ..Default::default()
            }))
            .then_expect_events(vec![VmEvent::VmReconfigured {
                name: None,
                description: None,
                cpu: None,
                memory: None,
                network: Some(forwarded(80, 20080)),
                cloud_init: None,
                boot_order: None,
                requires_restart,
            }]);
    }
}

#[test]
fn the_same_network_again_is_nothing_to_change() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Reconfigure(Reconfiguration {
            network: Some(crate::vm::NetworkSpec::default()),
            ..Default::default()
        }))
        .then_expect_error(VmError::NothingToChange);
}

#[test]
fn new_cloud_init_settings_are_always_a_change_and_a_new_revision() {
    let settings = CloudInitSpec {
        hostname: Some("web-1".into()),
        ..Default::default()
    };
    let running = state_after(history(VmStatus::Running));
    assert_eq!(running.cloud_init_revision, 0);
    // The same settings again still count: their secrets may differ.
    for _ in 0..2 {
        let events = running
            .decide(VmCommand::Reconfigure(Reconfiguration {
                cloud_init: Some(settings.clone()),
                ..Default::default()
            }))
            .expect("a change");
        assert!(matches!(
            &events[..],
            [VmEvent::VmReconfigured {
                requires_restart: true,
                ..
            }]
        ));
    }
    let events = running
        .decide(VmCommand::Reconfigure(Reconfiguration {
            cloud_init: Some(settings.clone()),
            ..Default::default()
        }))
        .expect("a change");
    let after = state_after([history(VmStatus::Running), events].concat());
    assert_eq!(after.cloud_init_revision, 1);
    assert_eq!(after.spec.cloud_init, Some(settings));
    // An unchanged boot order is nothing to change.
    assert_eq!(
        after.decide(VmCommand::Reconfigure(Reconfiguration {
            boot_order: Some(Vec::new()),
            ..Default::default()
        })),
        Err(VmError::NothingToChange)
    );
}

#[test]
fn renaming_a_running_vm_needs_no_restart() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(VmCommand::Reconfigure(Reconfiguration {
            name: Some("web-2".into()),
            ..Default::default()
        }))
        .then_expect_events(vec![VmEvent::VmReconfigured {
            name: Some("web-2".into()),
            description: None,
            cpu: None,
            memory: None,
            network: None,
            cloud_init: None,
            boot_order: None,
            requires_restart: false,
        }]);
}

#[test]
fn reconfiguring_with_nothing_new_is_refused() {
    VmTest::with(())
        .given(history(VmStatus::Stopped))
        .when(VmCommand::Reconfigure(Reconfiguration {
            cpu: Some(2),
            ..Default::default()
        }))
        .then_expect_error(VmError::NothingToChange);
}

#[test]
fn reconfiguring_during_a_job_is_busy() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(VmCommand::Reconfigure(Reconfiguration {
            cpu: Some(4),
            ..Default::default()
        }))
        .then_expect_error(VmError::NotReconfigurable {
            status: VmStatus::Starting,
            rejection: Rejection::Busy,
        });
}

#[test]
fn a_restart_clears_requires_restart() {
    let vm = state_after(
        [
            history(VmStatus::Running),
            vec![
                VmEvent::VmReconfigured {
                    name: None,
                    description: None,
                    cpu: Some(4),
                    memory: None,
                    network: None,
                    cloud_init: None,
                    boot_order: None,
                    requires_restart: true,
                },
                VmEvent::RestartRequested {
                    job_id: "job-r".into(),
                },
                VmEvent::VmRestarted {
                    job_id: "job-r".into(),
                    pid: 9,
                    process_start: Some(9_000),
                },
            ],
        ]
        .concat(),
    );
    assert!(!vm.requires_restart);
    assert_eq!(vm.spec.cpu, 4);
    assert_eq!(vm.pid, Some(9));
}

#[test]
fn every_request_opens_exactly_one_job_and_every_outcome_closes_it() {
    for status in VmStatus::ALL {
        let vm = state_after(history(status));
        for op in [
            Operation::Start,
            Operation::Stop,
            Operation::Restart,
            Operation::Pause,
            Operation::Resume,
            Operation::Reset,
            Operation::Delete,
        ] {
            if let Ok(events) = vm.decide(command_for(op, "job-new")) {
                assert_eq!(events.len(), 1);
                assert_eq!(
                    events[0].job_effect(),
                    Some(JobEffect::Opens {
                        job_id: "job-new",
                        operation: op
                    })
                );
            }
        }
    }
}

#[test]
fn event_type_names_are_stable_and_listed() {
    for status in VmStatus::ALL {
        for event in history(status) {
            assert!(VmEvent::TYPE_NAMES.contains(&event.type_name()));
            let json = serde_json::to_value(&event).unwrap();
            assert!(json.get(event.type_name()).is_some(), "{json}");
        }
    }
}

// Observations name their process: what a process that is no longer the VM's did changes nothing.

fn restarted() -> Vec<VmEvent> {
    [
        history(VmStatus::Running),
        vec![
            VmEvent::RestartRequested {
                job_id: "job-r".into(),
            },
            VmEvent::VmRestarted {
                job_id: "job-r".into(),
                pid: P2.pid,
                process_start: P2.start,
            },
        ],
    ]
    .concat()
}

fn force_stopped() -> Vec<VmEvent> {
    [
        history(VmStatus::Running),
        vec![
            VmEvent::StopRequested {
                job_id: "job-s".into(),
                force: true,
                timeout: 0,
            },
            VmEvent::VmStopped {
                job_id: Some("job-s".into()),
                reason: "QEMU was told to quit.".into(),
            },
        ],
    ]
    .concat()
}

fn about(process: MachineProcess, observed: Observed) -> VmCommand {
    VmCommand::Observe {
        process: Some(process),
        observed,
    }
}

fn clean_exit() -> Observed {
    Observed::Exited {
        clean: true,
        reason: "QEMU was told to quit".into(),
    }
}

#[test]
fn the_late_exit_of_the_process_a_restart_replaced_is_ignored() {
    VmTest::with(())
        .given(restarted())
        .when(about(P1, clean_exit()))
        .then_expect_events(vec![VmEvent::StaleObservationIgnored {
            pid: P1.pid,
            process_start: P1.start,
            observation: ObservationKind::Exited,
            reason: Some("QEMU was told to quit".into()),
            current_pid: Some(P2.pid),
        }]);
    let vm = state_after(restarted());
    assert_eq!(vm.status, Some(VmStatus::Running));
    assert_eq!(vm.current_process(), Some(P2));
}

#[test]
fn the_exit_of_the_process_a_restart_started_is_recorded() {
    VmTest::with(())
        .given(restarted())
        .when(about(
            P2,
            Observed::Exited {
                clean: false,
                reason: "killed".into(),
            },
        ))
        .then_expect_events(vec![VmEvent::VmCrashed {
            reason: "killed".into(),
            job_id: None,
        }]);
}

#[test]
fn a_process_with_the_pid_of_the_vms_but_another_start_time_is_another_process() {
    let reused = MachineProcess {
        pid: P2.pid,
        start: Some(1),
    };
    VmTest::with(())
        .given(restarted())
        .when(about(reused, Observed::Paused))
        .then_expect_events(vec![VmEvent::StaleObservationIgnored {
            pid: P2.pid,
            process_start: Some(1),
            observation: ObservationKind::Paused,
            reason: None,
            current_pid: Some(P2.pid),
        }]);
}

#[test]
fn the_old_exit_seen_while_the_next_start_runs_does_not_fail_it() {
    let starting = [
        force_stopped(),
        vec![VmEvent::StartRequested {
            job_id: "job-2".into(),
        }],
    ]
    .concat();
    VmTest::with(())
        .given(starting)
        .when(about(P1, clean_exit()))
        .then_expect_events(vec![VmEvent::StaleObservationIgnored {
            pid: P1.pid,
            process_start: P1.start,
            observation: ObservationKind::Exited,
            reason: Some("QEMU was told to quit".into()),
            current_pid: None,
        }]);
}

#[test]
fn the_old_exit_seen_after_the_next_start_does_not_stop_the_vm() {
    let started = [
        force_stopped(),
        vec![
            VmEvent::StartRequested {
                job_id: "job-2".into(),
            },
            VmEvent::VmStarted {
                job_id: "job-2".into(),
                pid: P2.pid,
                process_start: P2.start,
                accel: "tcg".into(),
            },
        ],
    ]
    .concat();
    VmTest::with(())
        .given(started)
        .when(about(P1, clean_exit()))
        .then_expect_events(vec![VmEvent::StaleObservationIgnored {
            pid: P1.pid,
            process_start: P1.start,
            observation: ObservationKind::Exited,
            reason: Some("QEMU was told to quit".into()),
            current_pid: Some(P2.pid),
        }]);
}

#[test]
fn the_new_process_dying_while_its_start_runs_fails_the_start() {
    let starting = [
        force_stopped(),
        vec![VmEvent::StartRequested {
            job_id: "job-2".into(),
        }],
    ]
    .concat();
    VmTest::with(())
        .given(starting)
        .when(about(
            P2,
            Observed::Exited {
                clean: false,
                reason: "killed".into(),
            },
        ))
        .then_expect_events(vec![VmEvent::VmCrashed {
            reason: "killed".into(),
            job_id: Some("job-2".into()),
        }]);
}

#[test]
fn a_stale_observation_that_would_change_nothing_leaves_no_trace() {
    VmTest::with(())
        .given(force_stopped())
        .when(about(P1, clean_exit()))
        .then_expect_events(vec![]);
}

#[test]
fn an_observation_without_a_process_is_about_the_vms_current_one() {
    VmTest::with(())
        .given(restarted())
        .when(VmCommand::Observe {
            process: None,
            observed: Observed::Exited {
                clean: false,
                reason: "QEMU was not running when VoidVM started.".into(),
            },
        })
        .then_expect_events(vec![VmEvent::VmCrashed {
            reason: "QEMU was not running when VoidVM started.".into(),
            job_id: None,
        }]);
}

#[test]
fn a_process_recorded_without_its_start_time_is_matched_by_pid() {
    let v1 = [
        history(VmStatus::Starting),
        vec![VmEvent::VmStarted {
            job_id: "job-1".into(),
            pid: P1.pid,
            process_start: None,
            accel: "tcg".into(),
        }],
    ]
    .concat();
    VmTest::with(())
        .given(v1.clone())
        .when(about(P1, clean_exit()))
        .then_expect_events(vec![VmEvent::VmStopped {
            job_id: None,
            reason: "QEMU was told to quit".into(),
        }]);
    VmTest::with(())
        .given(v1)
        .when(about(P2, clean_exit()))
        .then_expect_events(vec![VmEvent::StaleObservationIgnored {
            pid: P2.pid,
            process_start: P2.start,
            observation: ObservationKind::Exited,
            reason: Some("QEMU was told to quit".into()),
            current_pid: Some(P1.pid),
        }]);
}

fn open_console(console: ConsoleKind) -> VmCommand {
    VmCommand::OpenConsole {
        console,
        session_id: "con-1".into(),
    }
}

#[test]
fn a_console_of_a_running_vm_is_opened_and_recorded() {
    VmTest::with(())
        .given(history(VmStatus::Running))
        .when(open_console(ConsoleKind::Serial))
        .then_expect_events(vec![VmEvent::ConsoleOpened {
            console: ConsoleKind::Serial,
            session_id: "con-1".into(),
        }]);
}

#[test]
fn a_console_of_a_vm_that_is_not_running_is_refused() {
    VmTest::with(())
        .given(history(VmStatus::Stopped))
        .when(open_console(ConsoleKind::Vnc))
        .then_expect_error(VmError::NoConsole {
            status: VmStatus::Stopped,
            rejection: Rejection::NotRunning,
        });
}

#[test]
fn a_console_during_a_job_is_busy() {
    VmTest::with(())
        .given(history(VmStatus::Starting))
        .when(open_console(ConsoleKind::Serial))
        .then_expect_error(VmError::NoConsole {
            status: VmStatus::Starting,
            rejection: Rejection::Busy,
        });
}

#[test]
fn only_a_running_vm_opens_a_console() {
    for status in VmStatus::ALL {
        let result = state_after(history(status)).decide(open_console(ConsoleKind::Serial));
        assert_eq!(
            result.is_ok(),
            status == VmStatus::Running,
            "{status}: {result:?}"
        );
    }
}

#[test]
fn a_console_close_is_recorded_whatever_the_status() {
    for status in VmStatus::ALL {
        let events = state_after(history(status))
            .decide(VmCommand::CloseConsole {
                console: ConsoleKind::Vnc,
                session_id: "con-1".into(),
            })
            .unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(
            events,
            vec![VmEvent::ConsoleClosed {
                console: ConsoleKind::Vnc,
                session_id: "con-1".into(),
            }]
        );
    }
}

#[test]
fn a_console_close_of_a_vm_that_never_existed_is_refused() {
    VmTest::with(())
        .given_no_previous_events()
        .when(VmCommand::CloseConsole {
            console: ConsoleKind::Serial,
            session_id: "con-1".into(),
        })
        .then_expect_error(VmError::NotFound);
}

#[test]
fn console_events_change_nothing_about_the_vm() {
    let before = state_after(history(VmStatus::Running));
    let after = state_after(
        [
            history(VmStatus::Running),
            vec![
                VmEvent::ConsoleOpened {
                    console: ConsoleKind::Serial,
                    session_id: "con-1".into(),
                },
                VmEvent::ConsoleClosed {
                    console: ConsoleKind::Serial,
                    session_id: "con-1".into(),
                },
            ],
        ]
        .concat(),
    );
    assert_eq!(before, after);
}
