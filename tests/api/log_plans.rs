//! Reads of the log by position (`voidvm::store::feed::after`: the relay, `/ws` replays, the
//! webhooks' outbox; `voidvm::store::audit::page`: `GET /events`) touch only the events they
//! return, even on a log PostgreSQL has no statistics of yet (a young database under load, before
//! autovacuum analysed it) and with the plan PostgreSQL caches for a prepared statement. The
//! planner had taken the primary key (first column: the stream type) for a selective index and
//! read all of it at every read.

use serde_json::Value;
use sqlx::{Connection, PgConnection};
use voidvm::store::audit::{self, EventFilter, StreamType};
use voidvm::store::feed::{self, Scope, Streams};

use crate::helpers::Env;

/// Events in the log.
const LOG: i64 = 20_000;
/// Events a read asks for.
const READ: i64 = 40;

/// A connection to a migrated test database whose log holds [`LOG`] VM events and has no
/// statistics, with PostgreSQL's cached (generic) plans forced; and the position [`READ`] events
/// before the end.
async fn log_without_statistics(env: &Env) -> (PgConnection, i64) {
    voidvm::store::connect_and_migrate(&env.database_url, 1)
        .await
        .expect("the test database could not be migrated")
        .close()
        .await;
    let mut conn = PgConnection::connect(&env.database_url)
        .await
        .expect("a connection to the test database");
    for sql in [
        "ALTER TABLE events SET (autovacuum_enabled = false)",
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'vm', 'vm-' || (g % 500), g / 500 + 1, 'VmReconfigured', '1', '{}',
                '{\"owner_id\": \"u-1\"}'
         FROM generate_series(0, 19999) g",
        "SET plan_cache_mode = force_generic_plan",
    ] {
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let statistics: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stats WHERE tablename = 'events'")
            .fetch_one(&mut conn)
            .await
            .expect("pg_stats");
    assert_eq!(
        statistics, 0,
        "the events were analysed: the test proves nothing"
    );
    let from: i64 = sqlx::query_scalar(&format!(
        "SELECT position FROM events ORDER BY position DESC OFFSET {READ} LIMIT 1"
    ))
    .fetch_one(&mut conn)
    .await
    .expect("a position");
    (conn, from)
}

/// Rows the plan's scans of `events` and its indexes produced (times their loops).
fn rows_read_from_events(node: &Value) -> f64 {
    let on_events = node["Relation Name"] == "events"
        || node["Index Name"]
            .as_str()
            .is_some_and(|index| index.starts_with("events"));
    let scan = node["Node Type"]
        .as_str()
        .is_some_and(|t| t.contains("Scan"));
    let own = if on_events && scan {
        node["Actual Rows"].as_f64().unwrap_or(0.0) * node["Actual Loops"].as_f64().unwrap_or(1.0)
    } else {
        0.0
    };
    own + node["Plans"]
        .as_array()
        .map_or(0.0, |plans| plans.iter().map(rows_read_from_events).sum())
}

/// Prepares `sql` (parameters of `types`) as statement `n`, runs it with `args` and fails the
/// test if it took more than a few times [`READ`] rows from the events.
async fn assert_reads_only_its_rows(
    conn: &mut PgConnection,
    n: usize,
    name: &str,
    sql: &str,
    types: &str,
    args: &str,
) {
    let prepare = format!("PREPARE read_{n} ({types}) AS {sql}");
    sqlx::query(&prepare)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{prepare}: {e}"));
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE read_{n} ({args})"
    ))
    .fetch_one(&mut *conn)
    .await
    .expect("the plan");
    let read = rows_read_from_events(&plan[0]["Plan"]);
    assert!(
        read <= (READ * 4) as f64,
        "{name}: a read of {READ} of {LOG} events took {read} rows from the events' table and \
         indexes:\n{plan:#}"
    );
}

#[actix_rt::test]
async fn a_read_of_the_feed_touches_only_its_range_without_statistics() {
    let env = Env::new().await;
    let (mut conn, from) = log_without_statistics(&env).await;
    let max = i64::MAX;
    let scopes = [
        (
            "every stream",
            Scope::default(),
            "bigint, bigint, bigint",
            format!("{from}, {max}, 256"),
        ),
        (
            "every VM",
            Scope {
                streams: Streams::Vms,
                owner_id: None,
            },
            "bigint, bigint, bigint",
            format!("{from}, {max}, 256"),
        ),
        (
            "one owner's VMs",
            Scope {
                streams: Streams::Vms,
                owner_id: Some("u-1".into()),
            },
            "bigint, bigint, text, bigint",
            format!("{from}, {max}, 'u-1', 256"),
        ),
    ];
    for (n, (name, scope, types, args)) in scopes.into_iter().enumerate() {
        let sql = feed::after_sql(&scope);
        assert_reads_only_its_rows(&mut conn, n, name, &sql, types, &args).await;
    }
    let _ = conn.close().await;
}

#[actix_rt::test]
async fn a_page_of_events_touches_only_its_rows_without_statistics() {
    let env = Env::new().await;
    let (mut conn, from) = log_without_statistics(&env).await;
    let max = i64::MAX;
    let filters = [
        (
            "an admin's first page",
            EventFilter {
                accounts: true,
                ..EventFilter::default()
            },
            "bigint, bigint",
            format!("{max}, {READ}"),
        ),
        (
            "VM streams after a cursor",
            EventFilter {
                after: Some(from),
                ..EventFilter::default()
            },
            "bigint, bigint, bigint",
            format!("{max}, {from}, 256"),
        ),
        (
            "streamType=vm",
            EventFilter {
                stream_type: Some(StreamType::Vm),
                accounts: true,
                ..EventFilter::default()
            },
            "bigint, bigint",
            format!("{max}, {READ}"),
        ),
    ];
    for (n, (name, filter, types, args)) in filters.into_iter().enumerate() {
        let sql = audit::page_sql(&filter);
        assert_reads_only_its_rows(&mut conn, n, name, &sql, types, &args).await;
    }
    let _ = conn.close().await;
}
