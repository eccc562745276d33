//! The event store's snapshots: state loaded from the VM's list row, and rebuilt from snapshot +
//! later events, equals the state the actor kept in memory, across many snapshot boundaries
//! (cqrs-es 0.5 re-applies events when it builds a snapshot, which VoidVM works around; this
//! proves the workaround).

use voidvm::store::{self, CommandMeta, VmEventStore};
use voidvm::vm::{JobResult, VmCommand};

use crate::helpers::{create_command, Env};

#[actix_rt::test]
async fn state_survives_a_reload_at_every_snapshot_boundary() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .unwrap();
    let store = VmEventStore::new(pool.clone(), 3);
    let meta = CommandMeta::system("test");
    let mut state = store.load("vm-snap").await.unwrap();
    crate::helpers::add_owner(&pool).await;
    let create = create_command("vm-snap", "snap", "j0");
    store.execute(&mut state, create, &meta).await.unwrap();
    let done = |job: &str, result| VmCommand::CompleteJob {
        job_id: job.into(),
        result,
    };
    store
        .execute(&mut state, done("j0", JobResult::Provisioned), &meta)
        .await
        .unwrap();
    for i in 0..8 {
        let start = format!("s{i}");
        let pause = format!("p{i}");
        let stop = format!("x{i}");
        let steps = vec![
            VmCommand::Start {
                job_id: start.clone(),
            },
            done(
                &start,
                JobResult::Started {
                    process: voidvm::vm::MachineProcess {
                        pid: i,
                        start: Some(u64::from(i)),
                    },
                    accel: "tcg".into(),
                },
            ),
            VmCommand::Pause {
                job_id: pause.clone(),
            },
            done(&pause, JobResult::Paused),
            VmCommand::Stop {
                job_id: stop.clone(),
                force: true,
                timeout: 0,
            },
            done(&stop, JobResult::Stopped { reason: "r".into() }),
        ];
        for command in steps {
            store.execute(&mut state, command, &meta).await.unwrap();
            // A load reads the VM's list row.
            let from_row = store.load("vm-snap").await.unwrap();
            assert_eq!(from_row.vm, state.vm, "after event {}", state.version);
            assert_eq!(from_row.version, state.version);
            // Without the row (a database from before the list held the state), a load reads
            // the latest snapshot and the events after it, to the same state. The next commit
            // writes the row again.
            sqlx::query("DELETE FROM vms WHERE id = 'vm-snap'")
                .execute(&pool)
                .await
                .unwrap();
            let from_snapshot = store.load("vm-snap").await.unwrap();
            assert_eq!(from_snapshot.vm, state.vm, "after event {}", state.version);
            assert_eq!(from_snapshot.version, state.version);
            // Go on from the row's load: its snapshot number must be right for the next
            // snapshot to be written.
            state = from_row;
        }
    }
    let snapshots: i64 =
        sqlx::query_scalar("SELECT current_snapshot FROM snapshots WHERE aggregate_id = 'vm-snap'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(snapshots, (state.version / 3) as i64);
    // A second writer with a stale state is refused, not merged.
    let mut stale = store.load("vm-snap").await.unwrap();
    store
        .execute(
            &mut state,
            VmCommand::Start {
                job_id: "late".into(),
            },
            &meta,
        )
        .await
        .unwrap();
    let refused = store
        .execute(
            &mut stale,
            VmCommand::Start {
                job_id: "racer".into(),
            },
            &meta,
        )
        .await;
    assert!(refused.is_err());
    pool.close().await;
}
