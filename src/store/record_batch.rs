//! Group commit for the commands that are one statement (`super::record`): the commands of
//! different VMs that queued up since the node last sent such a statement go to PostgreSQL
//! together, as one statement (`super::batches`). Most of what
//! PostgreSQL spends on such a command is per transaction (the commit record and its WAL flush
//! among it), so this is the group commit of event stores and of PostgreSQL's own
//! `commit_delay`, done where the commands queue.
//!
//! Each command still commits all of its rows in one transaction, with the other commands of its
//! batch: a batch is written whole or not at all, and a caller hears back only after the commit.
//! A batch that PostgreSQL refuses (one command's events conflict with a write of another node,
//! say) was rolled back whole, so each of its commands is then recorded alone, and only the one
//! at fault fails. A batch holds at most one command per VM (a VM's actor sends its next command
//! only after the previous one is answered; a second one waits for the next batch anyway), in
//! the order of their ids, so that two nodes' batches sharing VMs cannot deadlock.
//!
//! No lock is taken and nothing orders one batch after another: several batches are in flight at
//! once on different connections, and other nodes write beside them.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::batches::{self, Batches};
use super::record::{self, Positions, Rows, Stamps};
use super::StoreError;

/// The most commands one statement records. (16 was measured worse for starts: README,
/// Benchmarks, "Tried and dropped: smaller batches".)
const MAX_BATCH: usize = 64;
/// How many statements the node has in flight at once (the node's command connections). Batches
/// form below it too: the commands that arrive while the task waits for its turn on the actors'
/// thread go together (about 12 a statement at 64 connections in `benches/command_load.rs`, with
/// this at 2, 4, 8, 16 or 32 alike).
const IN_FLIGHT: usize = 16;

type Answer = Result<Stamps, StoreError>;

struct Command {
    rows: Rows,
    solo_lock: Option<i64>,
    reply: oneshot::Sender<Answer>,
}

/// The node's one-statement commits. The task that sends the batches runs on the runtime of the
/// first caller (the VM actors' arbiter, where the pool's connections live).
pub struct Recorder {
    pool: PgPool,
    queue: Batches<Command>,
}

impl Recorder {
    pub fn new(pool: PgPool) -> Recorder {
        Recorder {
            pool,
            queue: Batches::new(),
        }
    }

    /// Records one command's rows, alone or with others, taking the solo-writer lock shared
    /// when given its key.
    pub async fn record(&self, rows: Rows, solo_lock: Option<i64>) -> Answer {
        let (reply, answer) = oneshot::channel();
        let command = Command {
            rows,
            solo_lock,
            reply,
        };
        let pool = &self.pool;
        let sent = self.queue.send(command, |queue| {
            let pool = pool.clone();
            tokio::spawn(batches::serve(queue, IN_FLIGHT, gather, move |batch| {
                let pool = pool.clone();
                async move { answer_batch(&pool, batch).await }
            }));
        });
        match sent {
            Ok(()) => match answer.await {
                Ok(answer) => answer,
                // The task ended with its runtime while the statement was in flight: whether it
                // committed is not known.
                Err(_) => Err(StoreError::Unavailable(
                    "the node's commits stopped with its runtime".into(),
                )),
            },
            // The task's runtime is stopping: record alone.
            Err(command) => alone(&self.pool, &command).await,
        }
    }
}

/// `first` and the commands queued behind it, up to [`MAX_BATCH`] and at most one per VM: the
/// command of a VM already in the batch goes first in the next. A command whose caller went away
/// before it was sent is not recorded. The batch is in the order of its VMs' ids.
fn gather(
    first: Command,
    queue: &mut mpsc::UnboundedReceiver<Command>,
) -> (Vec<Command>, Option<Command>) {
    let mut batch = vec![first];
    let mut held = None;
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(command) if batch.iter().any(|c| c.rows.vm_id() == command.rows.vm_id()) => {
                held = Some(command);
                break;
            }
            Ok(command) => batch.push(command),
            Err(_) => break,
        }
    }
    batch.retain(|c| !c.reply.is_closed());
    // Every node writes a batch's rows in the order of their VMs' ids, so two nodes' batches that
    // share VMs wait for each other rather than deadlock.
    batch.sort_by(|a, b| a.rows.vm_id().cmp(b.rows.vm_id()));
    (batch, held)
}

/// Records the batch and answers each command.
async fn answer_batch(pool: &PgPool, batch: Vec<Command>) {
    let solo_lock = batch.iter().find_map(|c| c.solo_lock);
    let rows: Vec<&Rows> = batch.iter().map(|c| &c.rows).collect();
    match record::record_or_refusal(pool, &rows, solo_lock, Positions::Statement).await {
        Ok(stamps) => {
            for (command, stamps) in batch.into_iter().zip(stamps) {
                let _ = command.reply.send(Ok(stamps));
            }
        }
        Err(sqlx::Error::Database(_)) if batch.len() > 1 => {
            // PostgreSQL refused the statement, so nothing of it was written: each command
            // again, alone, so that only the one at fault fails.
            for command in batch {
                let answer = alone(pool, &command).await;
                let _ = command.reply.send(answer);
            }
        }
        // The connection failed (the batch may have committed), or the batch was one command:
        // every command of the batch fails as the statement did.
        Err(error) => batches::fail_all(
            super::repository::conflict_on_duplicate(error),
            batch.into_iter().map(|c| c.reply),
        ),
    }
}

async fn alone(pool: &PgPool, command: &Command) -> Answer {
    record::record_one(pool, &command.rows, command.solo_lock, Positions::Statement).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(vm_id: &str) -> (Command, oneshot::Receiver<Answer>) {
        let (reply, answer) = oneshot::channel();
        let rows = Rows::for_test(vm_id);
        (
            Command {
                rows,
                solo_lock: None,
                reply,
            },
            answer,
        )
    }

    fn ids(batch: &[Command]) -> Vec<&str> {
        batch.iter().map(|c| c.rows.vm_id()).collect()
    }

    #[test]
    fn a_batch_takes_what_queued_and_a_vms_second_command_waits_for_the_next() {
        let (sender, mut queue) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for vm in ["b", "c", "a", "d"] {
            let (c, answer) = command(vm);
            answers.push(answer);
            sender.send(c).expect("queued");
        }
        let (first, _answer) = command("a");
        let (batch, held) = gather(first, &mut queue);
        assert_eq!(ids(&batch), ["a", "b", "c"]);
        let next = held.expect("a's second command is held");
        assert_eq!(next.rows.vm_id(), "a");
        let (batch, held) = gather(next, &mut queue);
        assert_eq!(ids(&batch), ["a", "d"]);
        assert!(held.is_none());
    }

    #[test]
    fn a_batch_is_in_the_order_of_its_vms_ids() {
        let (sender, mut queue) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for vm in ["vm-b", "vm-a", "vm-d"] {
            let (c, answer) = command(vm);
            answers.push(answer);
            sender.send(c).expect("queued");
        }
        let (first, _answer) = command("vm-c");
        let (batch, _) = gather(first, &mut queue);
        assert_eq!(ids(&batch), ["vm-a", "vm-b", "vm-c", "vm-d"]);
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_commands() {
        let (sender, mut queue) = mpsc::unbounded_channel();
        let mut answers = Vec::new();
        for n in 0..MAX_BATCH + 5 {
            let (c, answer) = command(&format!("vm-{n}"));
            answers.push(answer);
            sender.send(c).expect("queued");
        }
        let (first, _answer) = command("first");
        assert_eq!(gather(first, &mut queue).0.len(), MAX_BATCH);
        let (first, _answer) = command("second");
        let (batch, held) = gather(first, &mut queue);
        assert_eq!(batch.len(), 7);
        assert!(held.is_none());
        // Commands whose callers went away are left out.
        let (gone, answer) = command("gone");
        drop(answer);
        sender.send(gone).expect("queued");
        let (first, _answer) = command("third");
        assert_eq!(ids(&gather(first, &mut queue).0), ["third"]);
    }
}
