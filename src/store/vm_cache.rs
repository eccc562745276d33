//! A node's memory of VM rows, so that `GET /vms/{id}` needs no database round trip while it
//! is safe to skip one.
//!
//! It is safe only while no other node can commit: [`super::solo`] holds a PostgreSQL lock that
//! says this node is the only writer of the database and turns serving on ([`VmCache::serving`])
//! for a short lease it renews. The moment another node asks to write, this node stops serving
//! and empties the cache before it lets go of the lock, so a read on any node after a command's
//! answer still sees that command.
//!
//! On this node every commit of a VM's row goes through [`VmCache::writing`] (see
//! `Repository::commit`). The cache is never written from a commit: a commit empties the VM's
//! slot when it begins and again when it ends, and the next read fills it from the database. A
//! read fills the slot only if no commit of that VM was in flight or ended since the read began
//! (a [`Ticket`] taken before the read), so a read that raced a commit cannot leave the older row
//! behind. A commit whose outcome is unknown (the connection was lost while it ran) leaves its VM
//! uncacheable until a later commit of it succeeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::vm_view::VmView;

/// Shards, each behind its own mutex.
const SHARDS: usize = 64;
/// The most rows kept in each shard (1,024 in all by default is about 2 MB).
const PER_SHARD: usize = 256;

/// One VM's slot.
#[derive(Default)]
struct Slot {
    /// Commits of this VM now in flight.
    writers: u32,
    /// A commit of this VM ended without knowing whether it committed.
    unknown: bool,
    /// The shard's clock when the last commit of this VM ended.
    ended: u64,
    view: Option<Arc<VmView>>,
}

impl Slot {
    fn evictable(&self) -> bool {
        self.writers == 0 && !self.unknown
    }
}

#[derive(Default)]
struct Shard {
    /// Counts commit ends (and begins) in this shard.
    clock: u64,
    /// The latest `ended` of the slots evicted: a VM without a slot ended no later than this.
    floor: u64,
    slots: HashMap<String, Slot>,
}

impl Shard {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Makes room for one more slot, dropping one that holds nothing that must be kept.
    fn make_room(&mut self, capacity: usize) {
        if self.slots.len() < capacity {
            return;
        }
        let victim = self
            .slots
            .iter()
            .find(|(_, slot)| slot.evictable())
            .map(|(id, slot)| (id.clone(), slot.ended));
        if let Some((id, ended)) = victim {
            self.floor = self.floor.max(ended);
            self.slots.remove(&id);
        }
    }
}

/// Taken before a read of the database, shown again to fill the cache with what it read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    clock: u64,
}

/// How a commit ended, for [`Writing::end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// PostgreSQL said it committed. An earlier commit of the VM whose outcome was unknown can
    /// no longer change its row (it would conflict on the event's sequence, and the row keeps
    /// its latest version).
    Committed,
    /// PostgreSQL said no: nothing of it is in the database.
    Refused,
    /// The answer was lost (the connection failed): the commit may land or may not.
    Unknown,
}

pub struct VmCache {
    shards: Vec<Mutex<Shard>>,
    capacity: usize,
    /// Bumped whenever serving starts or stops: a read begun before cannot fill after.
    generation: AtomicU64,
    /// Until when (nanoseconds after `epoch`) reads may be served; 0 when they may not.
    serving_until: AtomicU64,
    epoch: Instant,
    /// Reads answered from memory, and reads that went to the database (for `/metrics`).
    hits: AtomicU64,
    misses: AtomicU64,
    /// The queries the reads from the database took (several reads share one, `vm_reads`).
    queries: AtomicU64,
}

impl Default for VmCache {
    fn default() -> Self {
        VmCache::new(PER_SHARD)
    }
}

impl VmCache {
    /// A cache that keeps at most `per_shard` rows in each of its shards. It serves nothing
    /// until [`VmCache::serve_until`] says it may.
    pub fn new(per_shard: usize) -> VmCache {
        VmCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            capacity: per_shard.max(1),
            generation: AtomicU64::new(0),
            serving_until: AtomicU64::new(0),
            epoch: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            queries: AtomicU64::new(0),
        }
    }

    fn shard(&self, vm_id: &str) -> MutexGuard<'_, Shard> {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in vm_id.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        let index = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        // A poisoned shard only means another thread panicked while holding it; its data is
        // still a consistent map (every change is one statement).
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether reads may be answered from the cache now.
    pub fn serving(&self) -> bool {
        self.now() < self.serving_until.load(Ordering::Acquire)
    }

    /// Lets reads be served for `lease` from now: this node is the only writer and has just
    /// checked it still is. The first call after [`VmCache::stop_serving`] starts empty.
    pub fn serve_until(&self, lease: Duration) {
        let until = self
            .now()
            .saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX));
        if self.serving_until.swap(until, Ordering::AcqRel) == 0 {
            // Starting: nothing read before this moment may fill.
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.clear();
        }
    }

    /// Stops serving at once and forgets every row (another node may write from now on).
    pub fn stop_serving(&self) {
        self.serving_until.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.clear();
    }

    fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            shard.slots.retain(|_, slot| !slot.evictable());
            for slot in shard.slots.values_mut() {
                slot.view = None;
            }
        }
    }

    /// The VM's row, if the cache may answer for it now (counted as a hit or a miss).
    pub fn get(&self, vm_id: &str) -> Option<Arc<VmView>> {
        let view = self.lookup(vm_id);
        let counter = if view.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        view
    }

    fn lookup(&self, vm_id: &str) -> Option<Arc<VmView>> {
        if !self.serving() {
            return None;
        }
        let shard = self.shard(vm_id);
        let view = shard.slots.get(vm_id)?.view.clone();
        drop(shard);
        // Checked again: serving may have stopped while the shard was read.
        view.filter(|_| self.serving())
    }

    /// Reads answered from memory and reads that went to the database, since the node started.
    pub fn reads(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Counts one query that read VM rows for reads that missed.
    pub fn queried(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// The queries that read VM rows for reads that missed, since the node started.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Taken before reading the VM's row from the database.
    pub fn ticket(&self, vm_id: &str) -> Ticket {
        let generation = self.generation.load(Ordering::Acquire);
        let clock = self.shard(vm_id).clock;
        Ticket { generation, clock }
    }

    /// Keeps `view`, read from the database after `ticket` was taken, unless a commit of its VM
    /// was in flight or ended since, or serving started or stopped since.
    pub fn fill(&self, ticket: Ticket, view: &VmView) {
        if !self.serving() {
            return;
        }
        let mut shard = self.shard(&view.id);
        if self.generation.load(Ordering::Acquire) != ticket.generation {
            return;
        }
        let ended = match shard.slots.get(&view.id) {
            Some(slot) if !slot.evictable() => return,
            Some(slot) => slot.ended,
            None => shard.floor,
        };
        if ended > ticket.clock {
            return;
        }
        if !shard.slots.contains_key(&view.id) {
            shard.make_room(self.capacity);
        }
        let slot = shard.slots.entry(view.id.clone()).or_default();
        slot.ended = ended;
        slot.view = Some(Arc::new(view.clone()));
    }

    /// Marks a commit of `vm_id` in flight until [`Writing::end`] (or its drop, which counts
    /// as an unknown outcome).
    pub fn writing(self: &Arc<Self>, vm_id: &str) -> Writing {
        let mut shard = self.shard(vm_id);
        shard.tick();
        if !shard.slots.contains_key(vm_id) {
            shard.make_room(self.capacity);
        }
        let slot = shard.slots.entry(vm_id.to_string()).or_default();
        slot.writers += 1;
        slot.view = None;
        Writing {
            cache: self.clone(),
            vm_id: vm_id.to_string(),
            ended: false,
        }
    }

    fn end(&self, vm_id: &str, outcome: Outcome) {
        let mut shard = self.shard(vm_id);
        let clock = shard.tick();
        if let Some(slot) = shard.slots.get_mut(vm_id) {
            slot.writers = slot.writers.saturating_sub(1);
            slot.ended = clock;
            slot.view = None;
            match outcome {
                Outcome::Committed => slot.unknown = false,
                Outcome::Refused => {}
                Outcome::Unknown => slot.unknown = true,
            }
        }
    }
}

/// A commit in flight (see [`VmCache::writing`]).
pub struct Writing {
    cache: Arc<VmCache>,
    vm_id: String,
    ended: bool,
}

impl Writing {
    pub fn end(mut self, outcome: Outcome) {
        self.ended = true;
        self.cache.end(&self.vm_id, outcome);
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.ended {
            self.cache.end(&self.vm_id, Outcome::Unknown);
        }
    }
}

#[cfg(test)]
mod tests;
