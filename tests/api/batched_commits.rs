//! Commands of different VMs that queue up together commit as one statement
//! (`store::record_batch`): each still commits whole, with its job, and one that PostgreSQL
//! refuses (a conflicting write, a failing row) fails alone while the rest of its batch commits.
//! Loads that queue up together (`store::load_batch`) each get their own stream.

use futures::future::join_all;
use sqlx::PgPool;
use voidvm::store::event_store::CommitError;
use voidvm::store::{self, CommandMeta, StoreError, VmEventStore, VmState};
use voidvm::vm::{JobResult, VmCommand};

use crate::helpers::{add_owner, create_command, Env};

/// `names.len()` provisioned VMs, `vm-<name>`, each one command at a time.
async fn provisioned(store: &VmEventStore, pool: &PgPool, names: &[&str]) -> Vec<VmState> {
    add_owner(pool).await;
    let meta = CommandMeta::system("test");
    let mut states = Vec::new();
    for name in names {
        let vm_id = format!("vm-{name}");
        let mut state = store.load(&vm_id).await.expect("a load");
        let provision = format!("job-provision-{name}");
        store
            .execute(&mut state, create_command(&vm_id, name, &provision), &meta)
            .await
            .expect("the creation");
        let done = VmCommand::CompleteJob {
            job_id: provision,
            result: JobResult::Provisioned,
        };
        store
            .execute(&mut state, done, &meta)
            .await
            .expect("the provisioning");
        states.push(state);
    }
    states
}

/// Starts every VM of `states` at once (on this single-threaded runtime all of them are queued
/// before the batching task first runs); each start's answer.
async fn start_all(store: &VmEventStore, states: &mut [VmState]) -> Vec<Result<(), CommitError>> {
    let meta = CommandMeta::system("test");
    join_all(states.iter_mut().map(|state| {
        let start = VmCommand::Start {
            job_id: format!("job-start-{}", state.vm.spec.name),
        };
        let meta = &meta;
        async move { store.execute(state, start, meta).await.map(|_| ()) }
    }))
    .await
}

async fn count(pool: &PgPool, sql: &str, vm: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(vm)
        .fetch_one(pool)
        .await
        .expect("a count")
}

#[actix_rt::test]
async fn starts_queued_together_commit_in_one_transaction_each_with_its_job() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .expect("the test database");
    let store = VmEventStore::new(pool.clone(), 100);
    let names = ["b0", "b1", "b2", "b3", "b4", "b5"];
    let mut states = provisioned(&store, &pool, &names).await;
    for answer in start_all(&store, &mut states).await {
        answer.expect("a start");
    }
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT position >> 16) FROM events WHERE event_type = 'StartRequested'",
    )
    .fetch_one(&pool)
    .await
    .expect("a count");
    assert_eq!(transactions, 1, "six starts queued together took several");
    // The statement gives its events their positions (migration 0021) as the trigger would:
    // its transaction's id (the rows' `xmin`, widened) shifted 16 bits, then 0, 1, 2... in the
    // batch's order (its VMs' ids).
    let positions: Vec<(String, i64, bool)> = sqlx::query_as(
        "SELECT aggregate_id, position & 65535,
                (position >> 16) & 4294967295 = xmin::text::bigint
         FROM events WHERE event_type = 'StartRequested' ORDER BY position",
    )
    .fetch_all(&pool)
    .await
    .expect("the positions");
    let expected: Vec<(String, i64, bool)> = (0..)
        .zip(names)
        .map(|(n, name)| (format!("vm-{name}"), n, true))
        .collect();
    assert_eq!(positions, expected);
    for (name, state) in names.iter().zip(&states) {
        let vm = format!("vm-{name}");
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM jobs WHERE vm_id = $1 AND kind = 'start'",
                &vm
            )
            .await,
            1,
            "{vm} has no start job"
        );
        let (status, version): (String, i64) =
            sqlx::query_as("SELECT status, version FROM vms WHERE id = $1")
                .bind(&vm)
                .fetch_one(&pool)
                .await
                .expect("the VM's row");
        assert_eq!(status, "starting");
        assert_eq!(Ok(version), i64::try_from(state.version));
    }
    pool.close().await;
}

#[actix_rt::test]
async fn a_refused_command_fails_alone_and_the_rest_of_its_batch_commits() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .expect("the test database");
    let store = VmEventStore::new(pool.clone(), 100);
    let names = ["ok0", "doomed", "ok1", "stale", "ok2"];
    let mut states = provisioned(&store, &pool, &names).await;
    // Another writer records `vm-stale`'s next event first: this node's state of it is stale.
    let mut elsewhere = store.load("vm-stale").await.expect("a load");
    let start = VmCommand::Start {
        job_id: "job-elsewhere".into(),
    };
    store
        .execute(&mut elsewhere, start, &CommandMeta::system("test"))
        .await
        .expect("the other writer's start");
    // And the write of `vm-doomed`'s row fails.
    sqlx::query(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.name = 'doomed' THEN RAISE EXCEPTION 'refused for the test'; END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&pool)
    .await
    .expect("the function");
    sqlx::query(
        "CREATE TRIGGER refuse_doomed BEFORE UPDATE ON vms
         FOR EACH ROW EXECUTE FUNCTION refuse_doomed()",
    )
    .execute(&pool)
    .await
    .expect("the trigger");

    let answers = start_all(&store, &mut states).await;
    for (name, answer) in names.iter().zip(&answers) {
        match *name {
            "doomed" => assert!(
                matches!(answer, Err(CommitError::Store(StoreError::Unexpected(_)))),
                "the refused start answered {answer:?}"
            ),
            "stale" => assert!(
                matches!(answer, Err(CommitError::Store(StoreError::Conflict))),
                "the stale start answered {answer:?}"
            ),
            _ => assert!(answer.is_ok(), "{name}'s start answered {answer:?}"),
        }
    }
    for name in names {
        let vm = format!("vm-{name}");
        let (events, jobs) = match name {
            "doomed" => (0, 0),
            // The other writer's start, not this one's.
            "stale" => (1, 0),
            _ => (1, 1),
        };
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM events
                 WHERE aggregate_id = $1 AND event_type = 'StartRequested'",
                &vm
            )
            .await,
            events,
            "{vm}'s start events"
        );
        assert_eq!(
            count(
                &pool,
                "SELECT count(*) FROM jobs WHERE vm_id = $1 AND id LIKE 'job-start-%'",
                &vm
            )
            .await,
            jobs,
            "{vm}'s start jobs"
        );
    }
    pool.close().await;
}

#[actix_rt::test]
async fn loads_queued_together_each_get_their_own_stream() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .expect("the test database");
    let store = VmEventStore::new(pool.clone(), 100);
    let mut states = provisioned(&store, &pool, &["l0", "l1", "l2"]).await;
    start_all(&store, &mut states[2..]).await;
    // `vm-l1` has no row in the list (a log from before the list held states): its load replays
    // its events. `vm-l2`'s row is a version behind its events: its load applies the last.
    sqlx::query("DELETE FROM vms WHERE id = 'vm-l1'")
        .execute(&pool)
        .await
        .expect("a delete");
    sqlx::query("UPDATE vms SET version = version - 1 WHERE id = 'vm-l2'")
        .execute(&pool)
        .await
        .expect("an update");
    let ids = ["vm-l0", "vm-l1", "vm-l2", "vm-l0", "vm-none"];
    let together = join_all(ids.iter().map(|id| store.load(id))).await;
    for (id, together) in ids.iter().zip(together) {
        let together = together.expect("a load");
        let alone = store.load(id).await.expect("a load");
        assert_eq!(together.vm, alone.vm, "{id} loaded with others");
        assert_eq!(together.version, alone.version, "{id} loaded with others");
        let (version, name) = match *id {
            "vm-none" => (0, ""),
            "vm-l2" => (3, "l2"),
            _ => (2, &id[3..]),
        };
        assert_eq!(together.version, version, "{id}'s version");
        assert_eq!(together.vm.spec.name, name, "{id}'s state");
    }
    pool.close().await;
}
