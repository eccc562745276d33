//! A node that writes alone answers `GET /vms/{id}` from memory, and no read on any node misses a
//! command answered before it: not on the node alone, not when a second node joins (the first
//! stops answering from memory before the second may commit), not after the lock's connection was
//! cut. When the other node is gone, the first writes alone again.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use voidvm::store::solo::SOLO_LOCK;

use crate::helpers::{eventually_async, spawn_app, spawn_second_node, TestApp};

/// A sample of this node's `/metrics` (e.g. `voidvm_node_writes_alone`), or `None`.
pub(crate) async fn sample(app: &TestApp, address: &str, series: &str) -> Option<f64> {
    let text = app
        .client
        .get(format!("{address}/metrics"))
        .send()
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("/metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn alone(app: &TestApp, address: &str) -> bool {
    sample(app, address, "voidvm_node_writes_alone").await == Some(1.0)
}

async fn memory_reads(app: &TestApp, address: &str) -> f64 {
    sample(app, address, r#"voidvm_vm_reads_total{from="memory"}"#)
        .await
        .unwrap_or(0.0)
}

pub(crate) async fn on(
    app: &TestApp,
    address: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = app
        .client
        .request(method, format!("{address}{path}"))
        .bearer_auth(&app.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.expect("the request");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A session holding the solo-writer lock shared, as a second node would (taken once the node
/// lets go of its exclusive hold): the app's reads then go to PostgreSQL.
pub(crate) async fn share_the_database(app: &TestApp) -> PgConnection {
    let mut other = PgConnection::connect(&app.env.database_url)
        .await
        .expect("the test database");
    sqlx::query("SELECT pg_advisory_lock_shared($1)")
        .bind(SOLO_LOCK)
        .execute(&mut other)
        .await
        .expect("the lock, shared");
    other
}

/// Changes the VM's description on `writer`, then reads it on `reader` right after the answer.
pub(crate) async fn change_then_read(
    app: &TestApp,
    writer: &str,
    reader: &str,
    id: &str,
    text: &str,
) {
    let path = format!("/api/v1/vms/{id}");
    let changed = on(
        app,
        writer,
        Method::PATCH,
        &path,
        Some(json!({"description": text})),
    )
    .await;
    let read = on(app, reader, Method::GET, &path, None).await;
    assert_eq!(
        read["data"]["description"], text,
        "{reader} read {read} after {changed}"
    );
}

#[actix_rt::test]
async fn a_node_alone_answers_reads_from_memory_and_each_sees_the_command_before_it() {
    let app = spawn_app().await;
    let me = app.address.clone();
    assert!(
        alone(&app, &me).await,
        "a node alone on its database should say so"
    );
    let id = app.create_blank("remembered").await;
    let before = memory_reads(&app, &me).await;
    for _ in 0..3 {
        on(&app, &me, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    }
    assert!(
        memory_reads(&app, &me).await >= before + 2.0,
        "repeated reads of an unchanged VM should be answered from memory"
    );
    for n in 0..30 {
        change_then_read(&app, &me, &me, &id, &format!("change {n}")).await;
    }
    // A lifecycle command, and its job's end, are seen as well.
    let started = on(
        &app,
        &me,
        Method::POST,
        &format!("/api/v1/vms/{id}/start"),
        None,
    )
    .await;
    let read = on(&app, &me, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(
        read["data"]["pendingJobId"], started["data"]["jobId"],
        "{read}"
    );
    let job = app
        .wait_job(started["data"]["jobId"].as_str().unwrap())
        .await;
    let read = on(&app, &me, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    assert_eq!(
        read["data"]["pendingJobId"],
        Value::Null,
        "{read} after {job}"
    );
}

#[actix_rt::test]
async fn a_second_node_turns_the_first_ones_memory_off_and_each_node_sees_the_others_commands() {
    let app = spawn_app().await;
    let first = app.address.clone();
    let id = app.create_blank("shared").await;
    // The first node remembers the VM...
    for _ in 0..2 {
        on(
            &app,
            &first,
            Method::GET,
            &format!("/api/v1/vms/{id}"),
            None,
        )
        .await;
    }
    assert!(alone(&app, &first).await);
    // ...until a second node joins: the second's very first command is seen by the first.
    let second = spawn_second_node(&app).await;
    change_then_read(&app, &second, &first, &id, "from the second node").await;
    assert!(
        !alone(&app, &first).await,
        "the first node still says it writes alone"
    );
    assert!(
        !alone(&app, &second).await,
        "the second node says it writes alone"
    );
    for n in 0..20 {
        change_then_read(&app, &second, &first, &id, &format!("second {n}")).await;
        change_then_read(&app, &first, &second, &id, &format!("first {n}")).await;
    }
}

#[actix_rt::test]
async fn a_node_writes_alone_again_once_the_other_is_gone_and_reads_stay_exact() {
    let app = spawn_app().await;
    let me = app.address.clone();
    let id = app.create_blank("again").await;
    // Another node, as far as the lock can tell.
    let other = share_the_database(&app).await;
    assert!(!alone(&app, &me).await);
    change_then_read(&app, &me, &me, &id, "shared").await;
    other.close().await.expect("the other session ends");
    eventually_async(10, "the node writes alone again", || alone(&app, &me)).await;
    for n in 0..10 {
        change_then_read(&app, &me, &me, &id, &format!("alone again {n}")).await;
    }
}

#[actix_rt::test]
async fn a_cut_lock_connection_turns_the_memory_off_until_the_lock_is_held_again() {
    let app = spawn_app().await;
    let me = app.address.clone();
    let id = app.create_blank("cut").await;
    on(&app, &me, Method::GET, &format!("/api/v1/vms/{id}"), None).await;
    let mut admin = PgConnection::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name LIKE 'voidvm % solo-writer lock'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("the lock's session");
    assert_eq!(cut, 1, "one node, one lock session");
    // Every read from now on sees every command, whatever the node makes of the cut.
    for n in 0..10 {
        change_then_read(&app, &me, &me, &id, &format!("cut {n}")).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    eventually_async(10, "the node writes alone again", || alone(&app, &me)).await;
    change_then_read(&app, &me, &me, &id, "after").await;
}

#[actix_rt::test]
async fn a_lone_node_that_never_shares_the_lock_is_fenced_off_by_a_newcomer() {
    // A "node" that holds the lock exclusively and never checks for waiters (as if frozen):
    // started before the app, on the app's database.
    let env = crate::helpers::Env::new().await;
    let mut frozen = PgConnection::connect(&env.database_url)
        .await
        .expect("the test database");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(SOLO_LOCK)
        .execute(&mut frozen)
        .await
        .expect("the lock");
    let app = crate::helpers::spawn_on(env).await;
    // The newcomer's commits wait for the lock until it fences the frozen holder off.
    let id = app.create_blank("fenced").await;
    assert!(
        sqlx::query("SELECT 1").execute(&mut frozen).await.is_err(),
        "the frozen holder's session should have been terminated"
    );
    eventually_async(10, "the newcomer writes alone", || {
        alone(&app, &app.address)
    })
    .await;
    change_then_read(&app, &app.address, &app.address, &id, "after the fence").await;
}
