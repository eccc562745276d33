//! A shell on the test guest's serial console, for tests that need to change or read something
//! inside the guest. It connects straight to the VM's console socket
//! (`<data dir>/vms/<id>/console.sock`; QEMU serves one client, and nothing else connects in the
//! tests that use this), types a command, and reads the console until an end marker that the
//! guest's shell computes (`$((6*7))`), so the echo of the typed line never counts as its answer.
//! The connection stays open while the shell is in use: QEMU drops what the guest has not read
//! when its client goes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::helpers::{eventually, TestApp};

pub struct GuestShell {
    tty: UnixStream,
    /// Commands typed so far (each gets its own end marker).
    count: u32,
}

impl GuestShell {
    /// Waits (up to `secs`) for the guest's shell on the console of VM `vm_id`, then connects.
    pub async fn open(app: &TestApp, vm_id: &str, secs: u64) -> GuestShell {
        eventually(secs, "the guest's shell", || {
            app.serial_log(vm_id).contains("built-in shell")
        })
        .await;
        let console = app
            .env
            .data_dir
            .join("vms")
            .join(vm_id)
            .join("console.sock");
        let tty = UnixStream::connect(&console)
            .await
            .expect("the serial console");
        GuestShell { tty, count: 0 }
    }

    /// Runs `command` in the guest and returns what the console showed until it finished (the
    /// typed line included). A line that is lost while the guest is busy is typed again (so
    /// commands must be safe to repeat); no answer within `secs` fails the test.
    pub async fn run(&mut self, command: &str, secs: u64) -> String {
        self.count += 1;
        let marker = format!("END-{}-42", self.count);
        let line = format!("{command}; echo \"END\"\"-{}-$((6*7))\"\n", self.count);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while tokio::time::Instant::now() < deadline {
            self.tty
                .write_all(line.as_bytes())
                .await
                .expect("typed on the console");
            let retype_at = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < retype_at.min(deadline) {
                let read =
                    tokio::time::timeout(Duration::from_millis(200), self.tty.read(&mut buf)).await;
                if let Ok(n) = read {
                    let n = n.expect("the console is readable");
                    assert!(n > 0, "the console closed; seen:\n{seen}");
                    seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if seen.contains(&marker) {
                        return seen;
                    }
                }
            }
        }
        panic!("`{command}` did not finish within {secs} s; the console showed:\n{seen}");
    }

    /// Runs `command` and returns the value it printed after `VAL=` (the command prints it as
    /// `"V""AL=..."`, so the typed line never matches).
    pub async fn value(&mut self, command: &str, secs: u64) -> String {
        let out = self.run(command, secs).await;
        out.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("VAL="))
            .unwrap_or_else(|| panic!("`{command}` printed no VAL= line:\n{out}"))
            .trim()
            .to_string()
    }
}
