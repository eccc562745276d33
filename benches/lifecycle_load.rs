//! Load harness for the lifecycle against a live VoidVM and real QEMU (TCG), each figure next to
//! a baseline measured in the same run.
//!
//! `cargo bench --bench lifecycle_load` reports:
//! - `POST /vms/{id}/start` until its job succeeded, against spawning the very same QEMU command
//!   line by hand (read from the running VM's `/proc/<pid>/cmdline`, pointed at a copy of its
//!   disk) until QMP says `running`;
//! - 12 graceful stops at once of guests that ignore the power button (a blank disk: firmware
//!   only), each with a stop timeout T, until every job ended, against T itself: one timeout is
//!   the least it can take, and workers that block for it would multiply it.
//!
//! Under `cargo test` (no `--bench`) it runs the same path at a small scale, as a smoke test.

mod common;
use common::{login, ms, percentiles, server_settings, Run};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use voidvm::hypervisor::qmp;
use voidvm::startup::Application;

struct Scale {
    starts: usize,
    stops: usize,
    stop_timeout_secs: u64,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            starts: 20,
            stops: 12,
            stop_timeout_secs: 10,
        }
    } else {
        Scale {
            starts: 2,
            stops: 3,
            stop_timeout_secs: 2,
        }
    };
    let system = actix_rt::System::new();
    system.block_on(run(scale));
}

async fn run(scale: Scale) {
    let Run {
        short, db, cleanup, ..
    } = Run::new().await;
    let settings = server_settings(&db, &short, &cleanup.data_dir);
    let mut cleanup = cleanup;
    let app = Application::build(settings).await.expect(
        "the application (PostgreSQL on 127.0.0.1:5432 and NATS with JetStream on \
         127.0.0.1:4222 must be running)",
    );
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(300))
            .build()
            .expect("an HTTP client"),
        base: format!("http://{}", app.addr()),
        token: String::new(),
    };
    let server = actix_rt::spawn(app.run_until_stopped());
    let api = api.logged_in().await;

    // Start -> job succeeded, then the same command line by hand.
    let guest = api.create("start-bench", "busybox").await;
    let mut through_api = Vec::new();
    let mut command_line = Vec::new();
    for n in 0..=scale.starts {
        let t0 = Instant::now();
        api.act(&guest, "start", json!({})).await;
        let took = t0.elapsed();
        if n == 0 {
            // The first start warms the page cache; it is not counted.
            command_line = cmdline(api.pid(&guest).await);
        } else {
            through_api.push(took);
        }
        api.act(&guest, "stop", json!({"force": true})).await;
    }
    let mut by_hand = bare_starts(
        &cleanup.data_dir,
        &guest,
        &command_line,
        scale.starts,
        &mut cleanup.pids,
    )
    .await;

    // Graceful stops at once, of guests that never answer the power button.
    let mut blank = Vec::new();
    for n in 0..scale.stops {
        let vm = api.create(&format!("deaf-{n}"), "ubuntu20.04").await;
        api.act(&vm, "start", json!({})).await;
        blank.push(vm);
    }
    let timeout = Duration::from_secs(scale.stop_timeout_secs);
    let t0 = Instant::now();
    futures::stream::iter(blank.iter())
        .for_each_concurrent(None, |vm| {
            let api = &api;
            async move {
                api.act(
                    vm,
                    "stop",
                    json!({"force": false, "timeout": timeout.as_secs()}),
                )
                .await;
            }
        })
        .await;
    let stops = t0.elapsed();
    for vm in &blank {
        assert_eq!(api.status(vm).await, "stopped", "VM {vm} is not stopped");
    }

    let (api_p50, api_p99) = percentiles(&mut through_api);
    let (hand_p50, hand_p99) = percentiles(&mut by_hand);
    println!(
        "\n{:<44} {:>9} {:>9} | {:>9} {:>9} | {:>6}",
        "measure", "p50 ms", "p99 ms", "base p50", "base p99", "ratio"
    );
    println!(
        "{:<44} {:>9.1} {:>9.1} | {:>9.1} {:>9.1} | {:>5.2}x",
        format!("start -> job succeeded ({} starts)", through_api.len()),
        ms(api_p50),
        ms(api_p99),
        ms(hand_p50),
        ms(hand_p99),
        api_p50.as_secs_f64() / hand_p50.as_secs_f64()
    );
    println!(
        "{:<44} {:>9.0} {:>9} | {:>9.0} {:>9} | {:>5.2}x",
        format!("{} graceful stops at once (ignore ACPI)", blank.len()),
        ms(stops),
        "",
        ms(timeout),
        "",
        stops.as_secs_f64() / timeout.as_secs_f64()
    );
    println!(
        "\nstart base = the same QEMU command line spawned by hand until QMP says running (TCG).\n\
         stop base = one stop timeout ({} s): the guests ignore the power button, so each stop is\n\
         forced when its timeout passes.",
        timeout.as_secs()
    );
    server.abort();
    let _ = server.await;
    drop(cleanup);
    drop(db);
}

/// The QEMU command line of a running process.
fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the QEMU command line");
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Spawns `command_line` (the server's own, pointed at a copy of the VM's directory) `samples`
/// times: from the spawn until QMP answers `running` after `cont`.
async fn bare_starts(
    data_dir: &Path,
    vm: &str,
    command_line: &[String],
    samples: usize,
    pids: &mut Vec<u32>,
) -> Vec<Duration> {
    let vm_dir = data_dir.join("vms").join(vm);
    let copy = data_dir.join("bare");
    std::fs::create_dir_all(&copy).expect("the baseline dir");
    let from = vm_dir.to_string_lossy().into_owned();
    let to = copy.to_string_lossy().into_owned();
    for entry in std::fs::read_dir(&vm_dir).expect("the VM's dir").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".qcow2") {
            std::fs::copy(entry.path(), copy.join(&name)).expect("a copy of the disk");
        }
    }
    let args: Vec<String> = command_line[1..]
        .iter()
        .map(|a| a.replace(&from, &to))
        .collect();
    let pid_file = copy.join(
        args.iter()
            .position(|a| a == "-pidfile")
            .and_then(|i| args.get(i + 1))
            .map(|p| {
                Path::new(p)
                    .file_name()
                    .expect("a pid file name")
                    .to_owned()
            })
            .expect("the command line names a pid file"),
    );
    let qmp_socket = args
        .iter()
        .filter_map(|a| a.strip_prefix("unix:"))
        .map(|a| PathBuf::from(a.split(',').next().unwrap_or(a)))
        .next()
        .expect("the command line has a QMP socket");
    let mut times = Vec::new();
    for _ in 0..=samples {
        let _ = std::fs::remove_file(&pid_file);
        let t0 = Instant::now();
        let out = tokio::process::Command::new(&command_line[0])
            .args(&args)
            .current_dir(&copy)
            .output()
            .await
            .expect("QEMU");
        assert!(
            out.status.success(),
            "QEMU: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .expect("the pid file")
            .trim()
            .parse()
            .expect("a pid");
        pids.push(pid);
        qmp::execute(&qmp_socket, qapi::qmp::cont {}, Duration::from_secs(10))
            .await
            .expect("cont");
        loop {
            let status = qmp::execute(
                &qmp_socket,
                qapi::qmp::query_status {},
                Duration::from_secs(10),
            )
            .await
            .expect("query-status");
            if matches!(status.status, qapi::qmp::RunState::running) {
                break;
            }
        }
        times.push(t0.elapsed());
        kill(pid).await;
    }
    // The first spawn warms the page cache, as on the API side.
    times.remove(0);
    times
}

async fn kill(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    while nix::sys::signal::kill(pid, None).is_ok() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn logged_in(mut self) -> Api {
        self.token = login(&self.http, &self.base).await;
        self
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("a request");
        let status = resp.status();
        let body: Value = resp.json().await.expect("a JSON answer");
        assert!(status.is_success(), "{status}: {body}");
        body
    }

    /// Creates a VM and waits for its provisioning job.
    async fn create(&self, name: &str, os: &str) -> String {
        let body = self
            .call(
                self.http
                    .post(format!("{}/api/v1/vms", self.base))
                    .json(&json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": os})),
            )
            .await;
        self.wait(body["data"]["jobId"].as_str().expect("a job id"))
            .await;
        body["data"]["id"].as_str().expect("a VM id").to_string()
    }

    /// Runs a lifecycle verb and waits for its job to succeed.
    async fn act(&self, vm: &str, verb: &str, body: Value) {
        let answer = self
            .call(
                self.http
                    .post(format!("{}/api/v1/vms/{vm}/{verb}", self.base))
                    .json(&body),
            )
            .await;
        self.wait(answer["data"]["jobId"].as_str().expect("a job id"))
            .await;
    }

    async fn wait(&self, job: &str) {
        for _ in 0..5 {
            let url = format!("{}/api/v1/jobs/{job}/wait?timeout=120", self.base);
            let body = self.call(self.http.get(url)).await;
            if body["data"]["finished"] == true {
                assert_eq!(body["data"]["status"], "succeeded", "job {job}: {body}");
                return;
            }
        }
        panic!("job {job} did not end in 10 minutes");
    }

    async fn vm(&self, vm: &str) -> Value {
        self.call(self.http.get(format!("{}/api/v1/vms/{vm}", self.base)))
            .await["data"]
            .clone()
    }

    async fn pid(&self, vm: &str) -> u32 {
        self.vm(vm).await["pid"]
            .as_u64()
            .expect("a running VM's pid") as u32
    }

    async fn status(&self, vm: &str) -> String {
        self.vm(vm).await["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
