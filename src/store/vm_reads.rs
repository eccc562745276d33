//! Reads of the VM list by id, batched per HTTP worker: the reads that arrive while one is in
//! flight go to PostgreSQL together, as one `WHERE id = ANY($1)`, when it answers.
//!
//! A node that shares its database cannot answer `GET /vms/{id}` from memory (`store::solo`):
//! every read is a query. Under load most of a primary-key read's cost is PostgreSQL's work per
//! statement (the round trip, parse, bind, the executor's start), not the row. Sending the reads
//! that queued up behind one query as the next query makes that cost per batch: PostgreSQL's
//! CPU per read falls as load rises, while a read alone still goes out at once, as before (no
//! timer, no waiting for company).
//!
//! A read still sees every command answered before it was asked: a read joins only a batch whose
//! query has not been sent yet, so the query's snapshot is taken after the read arrived.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::PgPool;

use super::batches::{self, Batches, Keyed};
use super::vm_cache::VmCache;
use super::vm_view::{self, VmView};
use super::StoreError;

/// The most ids one query asks for.
const MAX_BATCH: usize = 64;
/// How many batch queries one worker has in flight at once. Reads are batched only when all of
/// them are waiting for PostgreSQL.
const IN_FLIGHT: usize = 2;

type Answer = Result<Option<VmView>, StoreError>;

type Read = Keyed<String, Answer>;

/// One HTTP worker's VM reads. The task that sends the batches starts with the first read, on
/// the worker's own runtime (where its pool's connections live), and ends with the worker.
pub struct VmReads {
    pool: PgPool,
    /// The node's cache, which counts the queries (`/metrics`).
    cache: Arc<VmCache>,
    queue: Batches<Read>,
}

impl VmReads {
    pub fn new(pool: PgPool, cache: Arc<VmCache>) -> VmReads {
        VmReads {
            pool,
            cache,
            queue: Batches::new(),
        }
    }

    /// The VM's row, deleted or not, if it exists.
    pub async fn get(&self, vm_id: &str) -> Answer {
        if vm_id.contains('\0') {
            // No VM has such an id, and PostgreSQL would refuse the text, failing the whole
            // batch: other callers' reads must not depend on this one's input.
            return Ok(None);
        }
        let (pool, cache) = (&self.pool, &self.cache);
        let answer = self.queue.ask(vm_id.to_string(), |queue| {
            let (pool, cache) = (pool.clone(), cache.clone());
            tokio::spawn(batches::serve(
                queue,
                IN_FLIGHT,
                batches::up_to(MAX_BATCH),
                move |batch| {
                    let pool = pool.clone();
                    cache.queried();
                    async move { answer_batch(&pool, batch).await }
                },
            ));
        });
        match answer.await {
            Some(answer) => answer,
            // The worker's runtime is stopping: read alone.
            None => self.alone(vm_id).await,
        }
    }

    async fn alone(&self, vm_id: &str) -> Answer {
        self.cache.queried();
        vm_view::get(&self.pool, vm_id).await
    }
}

/// Reads the batch's rows and answers each read (a read whose caller went away is skipped).
async fn answer_batch(pool: &PgPool, batch: Vec<Read>) {
    let mut ids: Vec<&str> = batch.iter().map(|r| r.key.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    match vm_view::get_many(pool, &ids).await {
        Ok(rows) => {
            let rows: HashMap<String, VmView> =
                rows.into_iter().map(|v| (v.id.clone(), v)).collect();
            for read in batch {
                let _ = read.reply.send(Ok(rows.get(&read.key).cloned()));
            }
        }
        Err(error) => batches::fail_all(error, batch.into_iter().map(|r| r.reply)),
    }
}
