//! A node opens its own pool's connections, and plans its commands' statements on them, before
//! it serves (`store::warm`): its first burst of commands does not wait for connections to open
//! and for new backends to plan the commit statement.

use sqlx::PgPool;
use voidvm::store::{self, ConnectionBudget};

use crate::helpers::{spawn_on_then, Env};

/// The connections to the test database other than the one asking.
async fn others(database_url: &str, condition: &str) -> i64 {
    let pool = PgPool::connect(database_url)
        .await
        .expect("the test database");
    let n = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND ({condition})"
    ))
    .fetch_one(&pool)
    .await
    .expect("pg_stat_activity");
    pool.close().await;
    n
}

/// What the load of VM streams begins with (`store::load_batch`).
const LOAD: &str = "query LIKE '%FROM unnest($2::text[]) AS ids(id) CROSS JOIN LATERAL%'";

#[actix_rt::test]
async fn warming_opens_the_connections_and_plans_the_statements_on_each() {
    let env = Env::new().await;
    let pool = store::connect_and_migrate(&env.database_url, 5)
        .await
        .expect("the database");
    assert_eq!(
        others(&env.database_url, LOAD).await,
        0,
        "nothing loaded yet"
    );
    store::warm::warm(&pool, 5).await.expect("the warm-up");
    assert_eq!(pool.size(), 5, "the pool opened every connection");
    // The load is the last statement planned on each: every connection ran it.
    assert_eq!(others(&env.database_url, LOAD).await, 5);
    // Nothing was written.
    let (events, vms, jobs): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM vms), (SELECT count(*) FROM jobs)",
    )
    .fetch_one(&pool)
    .await
    .expect("the counts");
    assert_eq!((events, vms, jobs), (0, 0, 0));
    pool.close().await;
}

#[actix_rt::test]
async fn a_node_holds_its_own_pool_open_before_its_first_request() {
    let env = Env::new().await;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let budget = ConnectionBudget::new(env.settings().database_connections, cores);
    let (_app, held) = spawn_on_then(env, |url| async move { others(&url, "true").await }).await;
    // Its own pool's connections (its listeners' among them), whatever its locks hold besides;
    // its HTTP workers open theirs on demand.
    assert!(
        held >= i64::from(budget.node),
        "the node held {held} connections before its first request, fewer than its own pool's {}",
        budget.node
    );
}
