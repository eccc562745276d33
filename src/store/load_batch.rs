//! Loads of VM streams (`super::repository::Repository::load`), batched (`super::batches`): the
//! loads that queued up since the node last sent one go as one statement, each VM's part of it
//! the same as a load alone. A node that takes over many VMs at once (a
//! start on each of many VMs it has not served yet, a restart of the node) loads their actors
//! in a few statements instead of one each.

use std::collections::HashMap;

use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgPool;

use super::batches::{self, Batches, Keyed};
use super::StoreError;

/// The most streams one statement loads.
const MAX_BATCH: usize = 64;
/// How many load statements the node has in flight at once.
const IN_FLIGHT: usize = 2;

/// The `kind` of an event's row in a load; the rows before it are states.
pub const EVENT_ROW: i32 = 2;

/// A row of a stream as read: a state (`kind` 0: the VM's list row; 1: its latest snapshot),
/// with the snapshot's `number` and the state as `payload`, or one of its events
/// ([`EVENT_ROW`]).
#[derive(sqlx::FromRow, Clone)]
pub struct LoadRow {
    pub kind: i32,
    pub sequence: i64,
    pub number: Option<i64>,
    pub event_type: String,
    pub event_version: String,
    /// As PostgreSQL sent it: a state is read straight into a `Vm`, without a `Value` between.
    pub payload: Json<Box<RawValue>>,
    pub metadata: Value,
}

/// A row of the batch, with the stream it belongs to.
#[derive(sqlx::FromRow)]
struct StreamRow {
    id: String,
    #[sqlx(flatten)]
    row: LoadRow,
}

/// Each stream's rows: its list row (or, for a VM without one, its latest snapshot), then its
/// events after that state, in order. The VM's row and its events are written by one
/// transaction (see `super::record`), so a stream usually has no event after its row.
const LOAD: &str = "
SELECT ids.id, x.kind, x.sequence, x.number, x.event_type, x.event_version, x.payload, x.metadata
FROM unnest($2::text[]) AS ids(id) CROSS JOIN LATERAL (
    WITH r AS (SELECT version, state FROM vms WHERE id = ids.id),
         s AS (SELECT last_sequence, current_snapshot, payload FROM snapshots
               WHERE aggregate_type = $1 AND aggregate_id = ids.id)
    SELECT 0 AS kind, version AS sequence, (SELECT current_snapshot FROM s) AS number,
           '' AS event_type, '' AS event_version, state AS payload, 'null'::jsonb AS metadata
    FROM r
    UNION ALL
    SELECT 1, last_sequence, current_snapshot, '', '', payload, 'null'::jsonb
    FROM s
    WHERE NOT EXISTS (SELECT 1 FROM r)
    UNION ALL
    SELECT 2, sequence, NULL, event_type, event_version, payload, metadata
    FROM events
    WHERE aggregate_type = $1 AND aggregate_id = ids.id
      AND sequence > COALESCE((SELECT version FROM r), (SELECT last_sequence FROM s), 0)
) AS x
ORDER BY ids.id, x.kind, x.sequence";

type Answer = Result<Vec<LoadRow>, StoreError>;

type Load = Keyed<String, Answer>;

/// The node's loads of `aggregate_type` streams. The task that sends the batches runs on the
/// runtime of the first caller (the VM actors' arbiter).
pub struct Loads {
    pool: PgPool,
    aggregate_type: &'static str,
    queue: Batches<Load>,
}

impl Loads {
    pub fn new(pool: PgPool, aggregate_type: &'static str) -> Loads {
        Loads {
            pool,
            aggregate_type,
            queue: Batches::new(),
        }
    }

    /// The stream's rows, alone or with others'.
    pub async fn rows(&self, vm_id: &str) -> Answer {
        if vm_id.contains('\0') {
            // PostgreSQL would refuse the text, failing the whole batch: other callers' loads
            // must not depend on this one's input.
            return self.alone(vm_id).await;
        }
        let (pool, aggregate_type) = (&self.pool, self.aggregate_type);
        let answer = self.queue.ask(vm_id.to_string(), |queue| {
            let pool = pool.clone();
            tokio::spawn(batches::serve(
                queue,
                IN_FLIGHT,
                batches::up_to(MAX_BATCH),
                move |batch| {
                    let pool = pool.clone();
                    async move { answer_batch(&pool, aggregate_type, batch).await }
                },
            ));
        });
        match answer.await {
            Some(answer) => answer,
            // The task's runtime is stopping: load alone.
            None => self.alone(vm_id).await,
        }
    }

    async fn alone(&self, vm_id: &str) -> Answer {
        let rows = fetch(&self.pool, self.aggregate_type, &[vm_id]).await?;
        Ok(rows.into_iter().map(|r| r.row).collect())
    }
}

async fn fetch<'c, E>(
    conn: E,
    aggregate_type: &str,
    ids: &[&str],
) -> Result<Vec<StreamRow>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Postgres>,
{
    Ok(sqlx::query_as(LOAD)
        .bind(aggregate_type)
        .bind(ids)
        .fetch_all(conn)
        .await?)
}

/// Plans the load of VM streams on `conn` (a load of none), so that its first real load there
/// does not (see `super::warm`).
pub async fn plan(conn: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    fetch(conn, super::repository::AGGREGATE_TYPE, &[]).await?;
    Ok(())
}

/// Loads the batch's streams and answers each load.
async fn answer_batch(pool: &PgPool, aggregate_type: &str, mut batch: Vec<Load>) {
    let mut ids: Vec<&str> = batch.iter().map(|l| l.key.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    match fetch(pool, aggregate_type, &ids).await {
        Ok(rows) => {
            let mut streams: HashMap<String, Vec<LoadRow>> = HashMap::new();
            for row in rows {
                streams.entry(row.id).or_default().push(row.row);
            }
            // From the last load back: a stream asked for again earlier in the batch is cloned,
            // its first load takes it.
            while let Some(load) = batch.pop() {
                let rows = if batch.iter().any(|l| l.key == load.key) {
                    streams.get(&load.key).cloned()
                } else {
                    streams.remove(&load.key)
                };
                let _ = load.reply.send(Ok(rows.unwrap_or_default()));
            }
        }
        Err(error) => batches::fail_all(error, batch.into_iter().map(|l| l.reply)),
    }
}
