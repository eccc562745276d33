//! Opens a node's own pool before it serves (its listeners take theirs from it too), and has
//! each connection plan the statements every command sends.
//!
//! The node's pool opens connections on demand, on the runtime of whoever asks (the VM actors'
//! arbiter, for commands). Left to that, a node's first burst of commands (after a start, or a
//! crash, when a burst is most likely) waits while connections open under load and each new
//! backend reads the catalog and plans the commit statement for the first time: in
//! `benches/command_load.rs` the slowest starts of a fresh node came in the phase's first
//! quarter second, beside connections PostgreSQL recorded opening then. Run on the actors'
//! arbiter, so that the connections live where the commands' statements are sent.

use futures::future::try_join_all;
use sqlx::{PgConnection, PgPool};

use super::{load_batch, record, StoreError};

/// Opens `connections` of the pool at once (those idle count) and plans the commit and load
/// statements on each; they go back to the pool idle.
pub async fn warm(pool: &PgPool, connections: u32) -> Result<(), StoreError> {
    let mut held = try_join_all((0..connections).map(|_| pool.acquire())).await?;
    try_join_all(held.iter_mut().map(|conn| plan(conn))).await?;
    Ok(())
}

/// Sends the statements of a command with nothing in them: each is parsed, planned and kept
/// prepared on the connection, and writes nothing.
async fn plan(conn: &mut PgConnection) -> Result<(), StoreError> {
    record::record(&mut *conn, &[], None, record::Positions::Statement).await?;
    load_batch::plan(conn).await?;
    Ok(())
}
