//! The cache's rules, one test each: it serves only while told it may, and a read that raced a
//! commit of the same VM never leaves the older row behind.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{Outcome, VmCache};
use crate::store::vm_view::VmView;
use crate::vm::Vm;

fn view(id: &str, version: i64) -> VmView {
    let vm = Vm {
        id: id.to_string(),
        ..Vm::default()
    };
    let now = Utc::now();
    VmView::new(&vm, version, now, now)
}

fn serving() -> Arc<VmCache> {
    let cache = Arc::new(VmCache::default());
    cache.serve_until(Duration::from_secs(60));
    cache
}

fn cached_version(cache: &VmCache, id: &str) -> Option<i64> {
    cache.get(id).map(|v| v.version)
}

#[test]
fn a_read_fills_and_the_next_is_served() {
    let cache = serving();
    let ticket = cache.ticket("vm-a");
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), Some(3));
}

#[test]
fn nothing_is_served_or_kept_until_serving_is_allowed() {
    let cache = Arc::new(VmCache::default());
    let ticket = cache.ticket("vm-a");
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
    cache.serve_until(Duration::from_secs(60));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_read_begun_before_serving_started_does_not_fill() {
    let cache = Arc::new(VmCache::default());
    let ticket = cache.ticket("vm-a");
    cache.serve_until(Duration::from_secs(60));
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn the_lease_running_out_stops_serving() {
    let cache = Arc::new(VmCache::default());
    cache.serve_until(Duration::from_millis(30));
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), Some(3));
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn stopping_forgets_every_row_and_a_read_from_before_cannot_bring_one_back() {
    let cache = serving();
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    let ticket = cache.ticket("vm-a");
    cache.stop_serving();
    cache.serve_until(Duration::from_secs(60));
    assert_eq!(cached_version(&cache, "vm-a"), None);
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_commit_beginning_drops_the_row() {
    let cache = serving();
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    let writing = cache.writing("vm-a");
    assert_eq!(cached_version(&cache, "vm-a"), None);
    writing.end(Outcome::Committed);
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_read_while_a_commit_is_in_flight_does_not_fill() {
    let cache = serving();
    let writing = cache.writing("vm-a");
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
    writing.end(Outcome::Committed);
}

#[test]
fn a_read_begun_before_a_commit_ended_does_not_fill() {
    let cache = serving();
    let writing = cache.writing("vm-a");
    let ticket = cache.ticket("vm-a");
    writing.end(Outcome::Committed);
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_read_begun_before_a_whole_commit_does_not_fill() {
    let cache = serving();
    let ticket = cache.ticket("vm-a");
    cache.writing("vm-a").end(Outcome::Committed);
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_read_begun_after_a_commit_ended_fills() {
    let cache = serving();
    cache.writing("vm-a").end(Outcome::Committed);
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 4));
    assert_eq!(cached_version(&cache, "vm-a"), Some(4));
}

#[test]
fn a_commit_of_another_vm_does_not_keep_a_read_from_filling() {
    let cache = serving();
    let ticket = cache.ticket("vm-a");
    let writing = cache.writing("vm-b");
    cache.fill(ticket, &view("vm-a", 3));
    writing.end(Outcome::Committed);
    // vm-b may share vm-a's shard; then the read is refused (safe), else it is kept.
    let same_shard = cache.ticket("vm-a").clock != ticket.clock;
    assert_eq!(cached_version(&cache, "vm-a").is_none(), same_shard);
}

#[test]
fn an_unknown_outcome_keeps_the_vm_uncached_until_a_commit_of_it_succeeds() {
    let cache = serving();
    cache.writing("vm-a").end(Outcome::Unknown);
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
    cache.writing("vm-a").end(Outcome::Refused);
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
    cache.writing("vm-a").end(Outcome::Committed);
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 4));
    assert_eq!(cached_version(&cache, "vm-a"), Some(4));
}

#[test]
fn a_commit_dropped_before_it_ended_counts_as_unknown() {
    let cache = serving();
    drop(cache.writing("vm-a"));
    cache.fill(cache.ticket("vm-a"), &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}

#[test]
fn a_full_cache_drops_rows_but_never_a_vm_in_flight_or_unknown() {
    let cache = Arc::new(VmCache::new(1));
    cache.serve_until(Duration::from_secs(60));
    let in_flight = cache.writing("vm-busy");
    cache.writing("vm-lost").end(Outcome::Unknown);
    for n in 0..500 {
        let id = format!("vm-{n}");
        cache.fill(cache.ticket(&id), &view(&id, 1));
    }
    // Each shard keeps about one row; the two kept slots still refuse to fill.
    let kept = (0..500)
        .filter(|n| cache.get(&format!("vm-{n}")).is_some())
        .count();
    assert!(kept <= super::SHARDS + 2, "{kept} rows kept");
    cache.fill(cache.ticket("vm-busy"), &view("vm-busy", 1));
    cache.fill(cache.ticket("vm-lost"), &view("vm-lost", 1));
    assert_eq!(cached_version(&cache, "vm-busy"), None);
    assert_eq!(cached_version(&cache, "vm-lost"), None);
    in_flight.end(Outcome::Committed);
}

#[test]
fn a_row_evicted_after_a_read_began_does_not_let_that_read_fill() {
    // One slot per shard: the commit's slot is evicted by the next fill in its shard.
    let cache = Arc::new(VmCache::new(1));
    cache.serve_until(Duration::from_secs(60));
    let ticket = cache.ticket("vm-a");
    cache.writing("vm-a").end(Outcome::Committed);
    // Fill other VMs of vm-a's shard until vm-a's slot is gone.
    let shard_of_a = |id: &str| {
        let before = cache.ticket("vm-a").clock;
        let writing = cache.writing(id);
        let same = cache.ticket("vm-a").clock != before;
        writing.end(Outcome::Committed);
        same
    };
    let neighbour = (0..10_000)
        .map(|n| format!("vm-n{n}"))
        .find(|id| shard_of_a(id))
        .expect("some id shares vm-a's shard");
    cache.fill(cache.ticket(&neighbour), &view(&neighbour, 1));
    cache.fill(ticket, &view("vm-a", 3));
    assert_eq!(cached_version(&cache, "vm-a"), None);
}
