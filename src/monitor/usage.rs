//! Per-VM resource figures for `vm-status` frames: how much CPU and memory a VM's QEMU process
//! uses.
//!
//! Read straight from `/proc/<pid>/stat` (CPU time and start time) and `/proc/<pid>/status`
//! (resident set size), which is cheaper than a process-table library for the few pids asked
//! about. CPU percent is CPU time over wall time between two samples of the same pid, so a
//! [`UsageSampler`] remembers the previous reading per pid; the start time tells a reused pid
//! from the process that had it before. Meant to be asked at intervals of about a second or more:
//! CPU time is counted in clock ticks (usually 10 ms).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use nix::unistd::{sysconf, SysconfVar};
use serde::Serialize;

/// What one VM's QEMU process uses.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmUsage {
    /// Percent of one core since the previous sample: 100 is one full core, and an SMP guest can
    /// go past 100. 0 on the first sample of a process.
    pub cpu_percent: f64,
    /// Resident set size.
    pub memory_bytes: u64,
}

/// Samples processes by pid; remembers the previous CPU time of each.
#[derive(Debug, Default)]
pub struct UsageSampler {
    previous: HashMap<i32, Reading>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Process start time in ticks since boot, to notice a reused pid.
    start_time: u64,
    /// User plus system CPU time in ticks, all threads.
    cpu_ticks: u64,
    at: Instant,
}

impl UsageSampler {
    /// The process's usage since the previous call for this pid (CPU 0.0 on the first); None when
    /// the process is gone (no longer exists, or is a zombie waiting to be reaped).
    pub fn sample(&mut self, pid: i32) -> Option<VmUsage> {
        let Some((stat, memory_bytes)) = read_process(pid) else {
            self.previous.remove(&pid);
            return None;
        };
        let now = Instant::now();
        let cpu_percent = match self.previous.get(&pid) {
            Some(previous) if previous.start_time == stat.start_time => {
                let secs = now.duration_since(previous.at).as_secs_f64();
                let ticks = stat.cpu_ticks.saturating_sub(previous.cpu_ticks);
                if secs > 0.0 {
                    ticks as f64 / clock_ticks_per_second() / secs * 100.0
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        self.previous.insert(
            pid,
            Reading {
                start_time: stat.start_time,
                cpu_ticks: stat.cpu_ticks,
                at: now,
            },
        );
        Some(VmUsage {
            cpu_percent,
            memory_bytes,
        })
    }

    /// Forgets pids not in `alive` (so the map does not grow).
    pub fn retain(&mut self, alive: &[i32]) {
        self.previous.retain(|pid, _| alive.contains(pid));
    }
}

/// What `/proc/<pid>/stat` says that matters here.
#[derive(Debug, PartialEq)]
struct Stat {
    state: char,
    cpu_ticks: u64,
    start_time: u64,
}

/// The process's stat and resident bytes, or None if it is gone.
fn read_process(pid: i32) -> Option<(Stat, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    // Zombie or dead: it uses nothing and is as good as gone.
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((stat, parse_rss(&status)))
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state); utime, stime and starttime are fields 14, 15 and 22.
    let field = |number: usize| fields.get(number - 3)?.parse::<u64>().ok();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        cpu_ticks: field(14)?.saturating_add(field(15)?),
        start_time: field(22)?,
    })
}

/// Resident set size in bytes from `/proc/<pid>/status` (`VmRSS`, in kB); 0 when absent.
fn parse_rss(status: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// `sysconf(_SC_CLK_TCK)`, the unit of CPU times in `/proc`; Linux's fixed 100 if unavailable.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        _ => 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

    /// Kills the child even when an assertion fails first.
    struct Busy(Child);

    impl Drop for Busy {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_busy_process_uses_cpu_and_is_gone_once_reaped() {
        let mut busy = Busy(
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("spawn sh"),
        );
        let pid = i32::try_from(busy.0.id()).expect("pid fits i32");
        let mut sampler = UsageSampler::default();

        let first = sampler.sample(pid).expect("the child is running");
        assert_eq!(first.cpu_percent, 0.0, "the first sample only primes CPU");

        std::thread::sleep(Duration::from_millis(300));
        let second = sampler.sample(pid).expect("the child is still running");
        assert!(second.cpu_percent > 20.0, "{second:?}");
        assert!(second.memory_bytes > 0, "{second:?}");

        busy.0.kill().expect("kill");
        busy.0.wait().expect("reap");
        assert_eq!(sampler.sample(pid), None);
        assert!(
            sampler.previous.is_empty(),
            "a gone pid is forgotten: {:?}",
            sampler.previous
        );
    }

    #[test]
    fn own_process_is_sampled() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let mut sampler = UsageSampler::default();
        let usage = sampler.sample(pid).expect("this process exists");
        assert!(usage.memory_bytes > 0, "{usage:?}");
        assert_eq!(usage.cpu_percent, 0.0);
        let again = sampler.sample(pid).expect("this process exists");
        assert!(again.cpu_percent >= 0.0 && again.cpu_percent.is_finite());
    }

    #[test]
    fn retain_forgets_other_pids() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let mut sampler = UsageSampler::default();
        sampler.sample(pid).expect("this process exists");
        sampler.retain(&[pid]);
        assert!(sampler.previous.contains_key(&pid));
        sampler.retain(&[pid + 1]);
        assert!(sampler.previous.is_empty());
    }

    #[test]
    fn missing_pids_give_none() {
        let mut sampler = UsageSampler::default();
        assert_eq!(sampler.sample(0), None);
        assert_eq!(sampler.sample(-1), None);
        assert_eq!(sampler.sample(i32::MAX), None);
    }

    #[test]
    fn parses_stat_with_awkward_command_names() {
        // Fields 1..=22 and a few more; comm holds a space and a ')'.
        let line = "4242 (qemu (vm) 1) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 123456 1000000 500 18446744073709551615\n";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                cpu_ticks: 325,
                start_time: 123456,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn parses_rss() {
        let status = "Name:\tqemu\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads:\t4\n";
        assert_eq!(parse_rss(status), 2048 * 1024);
        assert_eq!(parse_rss("Name:\tkthreadd\n"), 0);
    }

    #[test]
    fn serializes_with_camel_case_keys() {
        let usage = VmUsage {
            cpu_percent: 150.5,
            memory_bytes: 42,
        };
        assert_eq!(
            serde_json::to_value(usage).expect("serializes"),
            serde_json::json!({ "cpuPercent": 150.5, "memoryBytes": 42 })
        );
    }
}
