//! One transaction per command: the events, the VM's row, its name reservation and its jobs commit
//! together or not at all; positions are `(xid << 16) + n` and need no lock.

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use voidvm::store::{self, CommandMeta, StoreError, VmEventStore};
use voidvm::vm::VmCommand;

use crate::helpers::{create_command, spawn_app, Env};

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[actix_rt::test]
async fn of_two_racing_creates_with_one_name_one_wins_and_the_other_writes_nothing() {
    let app = spawn_app().await;
    let body = json!({"name": "twin", "cpu": 1, "memory": 128, "disk": 1});
    let (a, b) = futures::join!(app.create_vm(body.clone()), app.create_vm(body));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
    let loser = if a.0 == StatusCode::CONFLICT {
        &a.1
    } else {
        &b.1
    };
    assert_eq!(loser["error"]["code"], "VM_NAME_TAKEN", "{loser}");

    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    assert_eq!(
        count(
            &pool,
            "SELECT count(DISTINCT aggregate_id) FROM events WHERE aggregate_type = 'vm'"
        )
        .await,
        1
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM vms").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM vm_names").await, 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM jobs").await, 1);
    pool.close().await;
}

#[actix_rt::test]
async fn a_rename_holds_the_new_name_frees_the_old_one_and_a_taken_name_changes_nothing() {
    let app = spawn_app().await;
    let create =
        |name: &str| app.create_vm(json!({"name": name, "cpu": 1, "memory": 128, "disk": 1}));
    let mut ids = Vec::new();
    for name in ["first", "other"] {
        let (_, body) = create(name).await;
        app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let (first, other) = (ids[0].clone(), ids[1].clone());
    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    let events = "SELECT count(*) FROM events WHERE aggregate_type = 'vm'";
    let before = count(&pool, events).await;

    let (status, body) = app
        .patch_vm(&first, json!({"name": "other", "cpu": 2}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "VM_NAME_TAKEN");
    assert_eq!(count(&pool, events).await, before, "nothing was recorded");
    let (_, vm) = app.get_vm(&first).await;
    assert_eq!(vm["data"]["name"], "first");
    assert_eq!(vm["data"]["cpu"], 1);

    let (status, body) = app.patch_vm(&first, json!({"name": "renamed"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A read right after the answer sees the change.
    assert_eq!(app.get_vm(&first).await.1["data"]["name"], "renamed");
    // The old name is free again; the new one is held.
    assert_eq!(create("first").await.0, StatusCode::CREATED);
    let (status, body) = app.patch_vm(&other, json!({"name": "renamed"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    pool.close().await;
}

#[actix_rt::test]
async fn a_command_whose_vm_row_cannot_be_written_records_nothing() {
    let app = spawn_app().await;
    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    // Makes the write of the VM's row, late in the command's transaction, fail for one name.
    sqlx::query(
        "CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.name = 'doomed' THEN RAISE EXCEPTION 'refused for the test'; END IF;
             RETURN NEW;
         END $$",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_doomed BEFORE INSERT OR UPDATE ON vms
         FOR EACH ROW EXECUTE FUNCTION refuse_doomed()",
    )
    .execute(&pool)
    .await
    .unwrap();
    let (status, body) = app
        .create_vm(json!({"name": "doomed", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // The first start's `UserCreated` is the only event: the failed command left none.
    for table in [
        "events WHERE aggregate_type = 'vm'",
        "vms",
        "vm_names",
        "jobs",
        "snapshots",
    ] {
        assert_eq!(
            count(&pool, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} holds a row of a command that failed"
        );
    }
    // The name was never taken.
    sqlx::query("DROP TRIGGER refuse_doomed ON vms")
        .execute(&pool)
        .await
        .unwrap();
    let (status, body) = app
        .create_vm(json!({"name": "doomed", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    pool.close().await;
}

#[actix_rt::test]
async fn a_cancel_that_finds_its_job_taken_by_a_worker_records_nothing() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .unwrap();
    let store = VmEventStore::new(pool.clone(), 100);
    let meta = CommandMeta::system("test");
    let mut state = store.load("vm-c").await.unwrap();
    crate::helpers::add_owner(&pool).await;
    let create = create_command("vm-c", "c", "job-provision");
    store.execute(&mut state, create, &meta).await.unwrap();
    store
        .execute(
            &mut state,
            VmCommand::CompleteJob {
                job_id: "job-provision".into(),
                result: voidvm::vm::JobResult::Provisioned,
            },
            &meta,
        )
        .await
        .unwrap();
    store
        .execute(
            &mut state,
            VmCommand::Start {
                job_id: "job-start".into(),
            },
            &meta,
        )
        .await
        .unwrap();
    // A worker claims the job between the API's look and the cancel's transaction.
    sqlx::query("UPDATE jobs SET status = 'running' WHERE id = 'job-start'")
        .execute(&pool)
        .await
        .unwrap();
    let events = count(
        &pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'vm'",
    )
    .await;
    let refused = store
        .execute(
            &mut state,
            VmCommand::CancelJob {
                job_id: "job-start".into(),
            },
            &meta,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(store::event_store::CommitError::Store(
                StoreError::JobNotQueued { .. }
            ))
        ),
        "{refused:?}"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'vm'"
        )
        .await,
        events
    );
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = 'job-start'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "running");
    // Back in the queue, the same cancel is recorded and closes the job in its transaction.
    sqlx::query("UPDATE jobs SET status = 'queued' WHERE id = 'job-start'")
        .execute(&pool)
        .await
        .unwrap();
    store
        .execute(
            &mut state,
            VmCommand::CancelJob {
                job_id: "job-start".into(),
            },
            &meta,
        )
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM jobs WHERE id = 'job-start'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");
    let row_status: String = sqlx::query_scalar("SELECT status FROM vms WHERE id = 'vm-c'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(row_status, "stopped");
    pool.close().await;
}

#[actix_rt::test]
async fn positions_are_the_transaction_id_then_the_order_within_it() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .unwrap();
    let insert = |first: i64, last: i64| {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT 'vm', 'vm-p', n, 'VmReconfigured', '1', '{}', '{}' FROM generate_series($1::bigint, $2::bigint) AS n",
        )
        .bind(first)
        .bind(last)
    };
    let mut tx = pool.begin().await.unwrap();
    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    insert(1, 3).execute(&mut *tx).await.unwrap();
    insert(4, 5).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM events WHERE aggregate_type = 'vm' ORDER BY sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        positions,
        (0..5).map(|n| (xid << 16) + n).collect::<Vec<_>>()
    );
    // The next transaction starts again at 0, above every earlier position.
    insert(6, 6).execute(&pool).await.unwrap();
    let next: i64 = sqlx::query_scalar(
        "SELECT position FROM events WHERE aggregate_type = 'vm' AND sequence = 6",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(next & 0xffff, 0);
    assert!(next > positions[4]);
    // At most 65,536 events in one transaction.
    let refused = insert(7, 7 + 65_536).execute(&pool).await;
    assert!(
        refused.is_err(),
        "65,537 events in one transaction were accepted"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM events WHERE aggregate_type = 'vm'"
        )
        .await,
        6
    );
    pool.close().await;
}

#[actix_rt::test]
async fn no_reader_passes_an_event_whose_transaction_is_still_in_flight() {
    let app = spawn_app().await;
    let (status, body) = app
        .create_vm(json!({"name": "later", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let vm = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    let start = *app.log_positions(&app.token, 0).await.last().unwrap();

    // An event whose transaction stays open: it has the smaller position...
    let pool = PgPool::connect(&app.env.database_url).await.unwrap();
    let mut held = pool.begin().await.unwrap();
    let held_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('vm', 'vm-held', 1, 'VmReconfigured', '1',
                 '{\"VmReconfigured\": {\"name\": null, \"description\": \"held\", \"cpu\": null, \"memory\": null, \"requiresRestart\": false}}',
                 '{\"actor_id\": \"system\", \"actor_name\": \"test\", \"via\": \"system\"}')
         RETURNING position",
    )
    .fetch_one(&mut *held)
    .await
    .unwrap();
    // ...and a command commits one above it.
    let (status, body) = app.patch_vm(&vm, json!({"description": "after"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, page) = app.events(&format!("?after={start}")).await;
    assert_eq!(
        page["data"]["items"],
        json!([]),
        "/events passed an event still in flight"
    );
    assert_eq!(page["data"]["next"], start);
    let mut ws = app.ws(&app.token).await;
    let (replay, _) = ws
        .subscribe(json!({"topic": "vm-status-all", "since": start}))
        .await;
    assert_eq!(
        crate::ws_client::positions(&replay),
        Vec::<i64>::new(),
        "the replay passed an event still in flight"
    );
    ws.close().await;

    held.commit().await.unwrap();
    let after = app.log_positions(&app.token, start).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(
        after[0], held_position,
        "the reader resumed and found the late commit"
    );
    pool.close().await;
}

#[actix_rt::test]
async fn a_log_ahead_of_the_clusters_transaction_ids_is_refused_at_start() {
    // A database restored into another cluster: its last position is past what new transaction
    // ids would give. New events would sort before it, so nothing may start writing.
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 16)
        .await
        .expect("an empty log starts");
    sqlx::query("ALTER TABLE events DISABLE TRIGGER USER")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata, position)
         VALUES ('vm', 'vm-restored', 1, 'VmCreated', '1.0', '{}', '{}',
                 ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000) << 16))",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE events ENABLE TRIGGER USER")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let refused = store::connect_and_migrate(&env.database_url, 16)
        .await
        .expect_err("a log ahead of the cluster's transaction ids");
    assert!(
        format!("{refused:#}").contains("restored into a PostgreSQL cluster"),
        "{refused:#}"
    );
}

/// Whether `pool`'s (only) connection is inside a transaction nobody ended: two statements then
/// see one transaction id.
async fn left_open(pool: &PgPool) -> bool {
    let a: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(pool)
        .await
        .unwrap();
    let b: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(pool)
        .await
        .unwrap();
    a == b
}

#[actix_rt::test]
async fn a_begin_cancelled_at_any_moment_leaves_no_transaction_open_in_the_pool() {
    let env = Env::new().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&env.database_url)
        .await
        .unwrap();
    assert!(!left_open(&pool).await, "the check itself");
    // Dropped after a few microseconds up to a few hundred: before `BEGIN` is sent, while its
    // answer is on the way, and after.
    for i in 0..300u64 {
        let _ = tokio::time::timeout(std::time::Duration::from_micros(i * 2), store::begin(&pool))
            .await;
        assert!(
            !left_open(&pool).await,
            "a begin cancelled after {} µs left its transaction open",
            i * 2
        );
    }
    pool.close().await;
}
