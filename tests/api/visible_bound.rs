//! The readers' bound, `voidvm_visible_bound()` (`migrations/0019_visible_bound.sql`,
//! `src/store/visible.rs`), against real transactions: never above a transaction of this database
//! still in flight, and never behind the snapshot's horizon for a transaction of this database
//! whose id is above that horizon.

use sqlx::{Connection, PgConnection};

use crate::helpers::Env;

async fn migrated(env: &Env) -> PgConnection {
    voidvm::store::connect_and_migrate(&env.database_url, 1)
        .await
        .expect("the test database could not be migrated")
        .close()
        .await;
    PgConnection::connect(&env.database_url)
        .await
        .expect("a connection to the test database")
}

/// Begins a transaction on `conn` that holds a transaction id, and returns that id.
async fn holding_an_id(conn: &mut PgConnection) -> i64 {
    sqlx::query("BEGIN")
        .execute(&mut *conn)
        .await
        .expect("BEGIN");
    sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(&mut *conn)
        .await
        .expect("a transaction id")
}

/// The bound, as a transaction id (positions are ids shifted left 16 bits).
async fn bound_id(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT voidvm_visible_bound() >> 16")
        .fetch_one(conn)
        .await
        .expect("the bound")
}

#[actix_rt::test]
async fn a_running_id_is_widened_to_the_one_within_2_31_of_the_horizon() {
    let env = Env::new().await;
    let mut conn = migrated(&env).await;
    let epoch = |e: i64| e << 32;
    // (horizon, 32-bit id, widened)
    let cases: [(i64, i64, i64); 5] = [
        (1_000, 999, 999),
        // Above the horizon (the latest completed id + 1), in the same epoch: 0007 took it for one
        // of the epoch before, and the bound came out negative.
        (1_000, 1_001, 1_001),
        (epoch(5) + 10, 4_294_967_290, epoch(4) + 4_294_967_290),
        (epoch(4) + 4_294_967_290, 3, epoch(5) + 3),
        (epoch(7) + 2_000_000_000, 100, epoch(7) + 100),
    ];
    for (horizon, xid, widened) in cases {
        let got: i64 = sqlx::query_scalar("SELECT voidvm_widen_xid($1, $2)")
            .bind(horizon)
            .bind(xid)
            .fetch_one(&mut conn)
            .await
            .expect("voidvm_widen_xid");
        assert_eq!(got, widened, "id {xid} against the horizon {horizon}");
    }
}

#[actix_rt::test]
async fn a_transaction_above_the_horizon_neither_makes_the_bound_negative_nor_is_passed() {
    let env = Env::new().await;
    let other = Env::new().await;
    let mut ours = migrated(&env).await;
    let mut reader = PgConnection::connect(&env.database_url)
        .await
        .expect("a connection to the test database");
    let mut elsewhere = PgConnection::connect(&other.database_url)
        .await
        .expect("a connection to the other database");
    // The id at the horizon goes to another database's transaction, still open; this database's
    // transaction gets a later one, so (with nothing else completing meanwhile) it runs above the
    // snapshot's xmax.
    let theirs = holding_an_id(&mut elsewhere).await;
    let mine = holding_an_id(&mut ours).await;
    assert!(mine > theirs);
    let horizon: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            .fetch_one(&mut reader)
            .await
            .expect("the snapshot's horizon");
    let bound = bound_id(&mut reader).await;
    assert!(
        bound <= mine,
        "the bound {bound} passed a transaction of this database in flight ({mine})"
    );
    assert!(
        bound >= horizon.min(mine),
        "the bound {bound} is behind both the horizon {horizon} and the transaction in flight {mine}"
    );
    // Once the transaction ends, the bound passes it.
    sqlx::query("COMMIT")
        .execute(&mut ours)
        .await
        .expect("COMMIT");
    let bound = bound_id(&mut reader).await;
    assert!(
        bound > mine,
        "the bound {bound} stays behind a transaction that ended ({mine})"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut elsewhere)
        .await
        .expect("ROLLBACK");
    for conn in [ours, reader, elsewhere] {
        let _ = conn.close().await;
    }
}
