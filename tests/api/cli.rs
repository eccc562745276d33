//! The `voidvm` client commands, run as the built binary against a real server: login keeps a
//! private credentials file, `--wait` follows jobs on the real test guest, exit statuses say what
//! failed, and `events --follow` resumes across a server restart without gaps or duplicates.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::helpers::{eventually, spawn_app, spawn_server, Env, TestApp, ADMIN};

/// One user's terminal: their own HOME and config dir, the server's URL.
pub(crate) struct Terminal {
    pub(crate) home: PathBuf,
    url: String,
}

pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\n{}", self.stdout, self.stderr)
        })
    }

    pub(crate) fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Terminal {
    pub(crate) fn new(app: &TestApp) -> Terminal {
        let home =
            std::env::temp_dir().join(format!("voidvm-cli-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&home).expect("a temp home");
        Terminal {
            home,
            url: app.address.clone(),
        }
    }

    fn credentials(&self) -> PathBuf {
        self.home.join("config/voidvm/credentials.json")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_voidvm"));
        cmd.args(args)
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join("config"))
            .env_remove("VOIDVM_URL")
            .env_remove("VOIDVM_TOKEN");
        cmd
    }

    async fn run_with(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = self.command(args);
        let stdin = stdin.to_string();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the voidvm binary starts");
            if let Some(mut pipe) = child.stdin.take() {
                let _ = pipe.write_all(stdin.as_bytes());
            }
            let out = child.wait_with_output().expect("voidvm ran");
            Run {
                code: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        })
        .await
        .expect("the runner")
    }

    /// Starts `voidvm` with `args` and leaves it running, its stdout and stderr piped; it is
    /// killed if dropped.
    pub(crate) fn spawn(&self, args: &[&str]) -> tokio::process::Child {
        tokio::process::Command::from(self.command(args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the voidvm binary starts")
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "").await
    }

    pub(crate) async fn login(&self) {
        let run = self
            .run_with(
                &[
                    "login",
                    "--url",
                    &self.url,
                    "--username",
                    ADMIN.0,
                    "--password-stdin",
                ],
                &format!("{}\n", ADMIN.1),
            )
            .await
            .ok();
        assert!(run.stdout.contains("Logged in"), "{}", run.stdout);
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("the file exists")
        .permissions()
        .mode()
        & 0o777
}

#[actix_rt::test]
async fn login_keeps_a_private_file_that_later_commands_use() {
    let app = spawn_app().await;
    let term = Terminal::new(&app);

    let run = term.run(&["vm", "list"]).await;
    assert_eq!(run.code, 3, "not logged in: {}", run.stderr);
    assert!(run.stderr.contains("not logged in"), "{}", run.stderr);

    // A damaged file is a local problem (8), and login replaces it.
    let file = term.credentials();
    std::fs::create_dir_all(file.parent().expect("a dir")).expect("the config dir");
    std::fs::write(&file, "not json").expect("a damaged file");
    let run = term.run(&["vm", "list"]).await;
    assert_eq!(run.code, 8, "{}", run.stderr);

    term.login().await;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().expect("a dir")), 0o700);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("readable")).expect("JSON");
    assert_eq!(stored["url"], app.address.as_str());

    let list = term.run(&["vm", "list", "--json"]).await.ok().json();
    assert_eq!(list, Value::Array(vec![]));
    let table = term.run(&["users", "list"]).await.ok();
    assert!(
        table
            .stdout
            .lines()
            .next()
            .is_some_and(|h| h.starts_with("ID")),
        "{}",
        table.stdout
    );
    assert!(table.stdout.contains("admin"), "{}", table.stdout);

    // A flag overrides the stored token; a bad token is exit status 3 with the API's code.
    let run = term.run(&["--token", "forged", "vm", "list"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("UNAUTHORIZED"), "{}", run.stderr);
    let run = term.run(&["--token", "forged", "events", "--follow"]).await;
    assert_eq!(
        run.code, 3,
        "the feed checks the token first: {}",
        run.stderr
    );
    // A server that is not there is 7.
    let run = term
        .run(&["--url", "http://127.0.0.1:9", "vm", "list"])
        .await;
    assert_eq!(run.code, 7, "{}", run.stderr);

    // Logout revokes the token and deletes the file.
    let token = stored["token"].as_str().expect("a token").to_string();
    term.run(&["logout"]).await.ok();
    assert!(!file.exists());
    let run = term
        .run(&["--url", &app.address, "--token", &token, "vm", "list"])
        .await;
    assert_eq!(run.code, 3, "a revoked token: {}", run.stderr);
}

#[actix_rt::test]
async fn a_guest_is_created_started_and_stopped_with_wait() {
    let app = spawn_app().await;
    let term = Terminal::new(&app);
    term.login().await;

    let create = term
        .run(&[
            "vm",
            "create",
            "--name",
            "cli-guest",
            "--cpu",
            "1",
            "--memory",
            "128",
            "--disk",
            "1",
            "--os",
            "busybox",
            "--wait",
            "--json",
        ])
        .await
        .ok();
    let vm = create.json();
    let id = vm["id"].as_str().expect("an id").to_string();
    assert_eq!(vm["status"], "stopped", "{vm}");
    assert!(
        create.stderr.contains("succeeded"),
        "progress on stderr: {}",
        create.stderr
    );

    // By name; the answer is the VM once its job succeeded.
    let started = term
        .run(&["vm", "start", "cli-guest", "--wait", "--json"])
        .await
        .ok();
    assert_eq!(started.json()["status"], "running", "{}", started.stderr);
    assert_eq!(app.status_of(&id).await, "running");
    let run = term.run(&["vm", "start", &id]).await;
    assert_eq!(run.code, 5, "already running is a conflict: {}", run.stderr);

    // The serial console from a pipe: stdin is typed, the guest's answer comes on stdout.
    eventually(60, "the guest to boot", || {
        app.serial_log(&id).contains("VOIDVM-GUEST-READY")
    })
    .await;
    let console = term
        .run_with(&["vm", "console", "cli-guest"], "echo hel\"\"lo-$((6*7))\n")
        .await
        .ok();
    assert!(
        console.stdout.contains("hello-42"),
        "stdout: {}\nstderr: {}",
        console.stdout,
        console.stderr
    );

    let stopped = term
        .run(&["vm", "stop", &id, "--force", "--timeout", "5", "--wait"])
        .await
        .ok();
    assert!(stopped.stdout.contains("stopped"), "{}", stopped.stdout);
    assert_eq!(app.status_of(&id).await, "stopped");
    let run = term.run(&["vm", "console", &id]).await;
    assert_eq!(run.code, 5, "a stopped VM has no console: {}", run.stderr);
    assert!(run.stderr.contains("VM_NOT_RUNNING"), "{}", run.stderr);

    let list = term.run(&["vm", "list", "--json"]).await.ok().json();
    let ids: Vec<&str> = list
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    let jobs = term
        .run(&["jobs", "list", "--vm", &id, "--json"])
        .await
        .ok()
        .json();
    let kinds: Vec<&str> = jobs["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|j| j["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 3, "create, start and stop: {jobs}");

    let run = term.run(&["vm", "get", "vm-nosuchthing"]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(run.stderr.contains("VM_NOT_FOUND"), "{}", run.stderr);
    let run = term.run(&["vm", "get", "no-such-name"]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    let run = term.run(&["jobs", "get", "job-nosuchthing"]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
}

/// A running `events --follow`: its stdout lines and stderr, as they arrive.
struct Follower {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Follower {
    fn start(term: &Terminal, token: &str) -> Follower {
        let mut child = term
            .command(&[
                "--url", &term.url, "--token", token, "events", "--follow", "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("voidvm events --follow starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, sink) = (child.stdout.take().expect("piped"), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("not poisoned").push(line);
            }
        });
        let (err, sink) = (child.stderr.take().expect("piped"), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().expect("not poisoned");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Follower {
            child,
            stdout,
            stderr,
        }
    }

    fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    fn positions(&self) -> Vec<i64> {
        self.events()
            .iter()
            .filter_map(|e| e["position"].as_i64())
            .collect()
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("not poisoned").clone()
    }

    fn signal(&self, signal: Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("a signal to the follower");
    }

    fn saw(&self, vm: &str, ty: &str) -> bool {
        self.events()
            .iter()
            .any(|e| e["vmId"] == vm && e["type"] == ty)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[actix_rt::test]
async fn events_follow_resumes_after_a_server_restart() {
    // A fixed port, so the restarted server is where the follower reconnects.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut env = Env::new().await;
    env.extra_vars
        .push(("VOIDVM_LISTEN".into(), format!("127.0.0.1:{port}")));
    let mut app = spawn_server(env).await;
    let id = app.create_guest("followed").await;
    let term = Terminal::new(&app);
    let follower = Follower::start(&term, &app.token);
    eventually(20, "the follower subscribing", || {
        follower
            .stderr()
            .contains("Following events after position")
    })
    .await;
    let start: i64 = follower
        .stderr()
        .split("after position ")
        .nth(1)
        .and_then(|s| s.split('.').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no start position: {}", follower.stderr()));

    app.act_and_wait(&id, "start", None).await;
    eventually(20, "VmStarted reaching the follower", || {
        follower.saw(&id, "VmStarted")
    })
    .await;

    // The follower is frozen while the server restarts and the VM stops, so those events can
    // only reach it by the replay of its resubscription.
    follower.signal(Signal::SIGSTOP);
    app.restart_server().await;
    app.act_and_wait(&id, "stop", Some(serde_json::json!({"force": true})))
        .await;
    follower.signal(Signal::SIGCONT);
    eventually(
        30,
        "VmStopped reaching the follower after the restart",
        || follower.saw(&id, "VmStopped"),
    )
    .await;
    assert!(
        follower.stderr().contains("reconnecting"),
        "{}",
        follower.stderr()
    );

    // Exactly the log's VM events after the start position: no gap, no duplicate.
    let expected = app.log_positions(&app.token, start).await;
    let mut seen = follower.positions();
    eventually(10, "the follower catching up with the log", || {
        seen = follower.positions();
        seen.len() >= expected.len()
    })
    .await;
    assert_eq!(seen, expected, "stderr: {}", follower.stderr());
}

#[actix_rt::test]
async fn webhooks_are_added_paused_resumed_listed_and_deleted() {
    let app = spawn_app().await;
    let term = Terminal::new(&app);
    term.login().await;
    let receiver = crate::receiver::Receiver::start().await;
    let url = receiver.url("/hook");
    let added = term
        .run(&[
            "webhooks",
            "create",
            &url,
            "--event",
            "VmCreated",
            "--event",
            "VmDeleted",
            "--json",
        ])
        .await
        .ok()
        .json();
    let id = added["id"].as_str().expect("an id").to_string();
    assert_eq!(
        added["events"],
        serde_json::json!(["VmCreated", "VmDeleted"])
    );
    assert!(added["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_")));

    let paused = term
        .run(&["webhooks", "pause", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(paused["active"], false);
    let resumed = term
        .run(&["webhooks", "resume", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(resumed["active"], true);
    // Resuming what runs changes nothing, and says so by showing it as it is.
    let again = term
        .run(&["webhooks", "resume", &id, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(again["active"], true);
    assert_eq!(again["version"], resumed["version"], "nothing was recorded");

    app.create_vm(
        serde_json::json!({"name": "hooked", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}),
    )
    .await;
    eventually(60, "the delivery", || !receiver.accepted().is_empty()).await;
    let mut delivered = Value::Null;
    for _ in 0..600 {
        delivered = term
            .run(&[
                "webhooks",
                "deliveries",
                &id,
                "--status",
                "delivered",
                "--json",
            ])
            .await
            .ok()
            .json();
        if delivered["pagination"]["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        delivered["items"][0]["eventType"], "VmCreated",
        "{delivered}"
    );
    let delivery = delivered["items"][0]["id"].to_string();
    let again = term
        .run(&["webhooks", "redeliver", &id, &delivery, "--json"])
        .await
        .ok()
        .json();
    assert_eq!(again["status"], "pending", "{again}");
    assert_eq!(again["attempts"], 0, "{again}");
    eventually(60, "the delivery sent again", || {
        receiver.accepted().len() == 2
    })
    .await;

    let table = term.run(&["webhooks", "list"]).await.ok();
    assert!(table
        .stdout
        .lines()
        .next()
        .is_some_and(|h| h.starts_with("ID")));
    assert!(table.stdout.contains(&id), "{}", table.stdout);
    term.run(&["webhooks", "delete", &id]).await.ok();
    let gone = term.run(&["webhooks", "get", &id]).await;
    assert_eq!(gone.code, 4, "{}", gone.stderr);
}

#[actix_rt::test]
async fn images_are_imported_with_wait_uploaded_from_a_file_listed_and_deleted() {
    use std::collections::HashMap;

    use crate::images::{app_with, kernel, sha256, FileServer, Images};
    let images = Images::new();
    let app = app_with(&images).await;
    let term = Terminal::new(&app);
    term.login().await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;

    let imported = term
        .run(&[
            "images",
            "import",
            "cli-imported",
            "--from",
            &server.url("/file/vmlinuz"),
            "--kind",
            "kernel",
            "--sha256",
            &sha256(&bytes),
            "--wait",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(imported["status"], "ready", "{imported}");
    assert_eq!(imported["sizeBytes"], bytes.len() as u64, "{imported}");

    let file = term.home.join("vmlinuz");
    std::fs::write(&file, &bytes).expect("the file to upload");
    let uploaded = term
        .run(&[
            "images",
            "upload",
            "cli-uploaded",
            file.to_str().expect("a UTF-8 path"),
            "--kind",
            "kernel",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(uploaded["source"], "upload", "{uploaded}");
    assert_eq!(uploaded["sha256"], sha256(&bytes), "{uploaded}");

    let wrong = term
        .run(&[
            "images",
            "upload",
            "cli-wrong",
            file.to_str().expect("a UTF-8 path"),
            "--kind",
            "kernel",
            "--sha256",
            &"0".repeat(64),
        ])
        .await;
    assert_eq!(
        wrong.code, 1,
        "a wrong checksum is refused: {}",
        wrong.stderr
    );
    assert!(wrong.stderr.contains("sha256"), "{}", wrong.stderr);

    let table = term.run(&["images", "list"]).await.ok();
    assert!(table.stdout.contains("cli-imported"), "{}", table.stdout);
    assert!(table.stdout.contains("cli-uploaded"), "{}", table.stdout);
    let deleted = term.run(&["images", "delete", "cli-uploaded"]).await.ok();
    assert!(
        deleted.stdout.contains("Deleted image cli-uploaded"),
        "{}",
        deleted.stdout
    );
    let gone = term.run(&["images", "get", "cli-uploaded"]).await;
    assert_eq!(gone.code, 4, "{}", gone.stderr);
}

#[actix_rt::test]
async fn a_vms_disk_snapshots_are_taken_listed_restored_and_deleted_with_wait() {
    let app = spawn_app().await;
    let term = Terminal::new(&app);
    term.login().await;
    let id = app.create_blank("snapped").await;
    let taken = term
        .run(&[
            "vm",
            "snapshot",
            "take",
            "snapped",
            "before-upgrade",
            "--description",
            "known good",
            "--wait",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(taken[0]["name"], "before-upgrade", "{taken}");
    assert_eq!(taken[0]["description"], "known good", "{taken}");
    let table = term.run(&["vm", "snapshot", "list", &id]).await.ok();
    assert!(table.stdout.contains("before-upgrade"), "{}", table.stdout);
    let missing = term
        .run(&["vm", "snapshot", "restore", &id, "no-such", "--wait"])
        .await;
    assert_eq!(missing.code, 4, "{}", missing.stderr);
    term.run(&["vm", "snapshot", "restore", &id, "before-upgrade", "--wait"])
        .await
        .ok();
    let left = term
        .run(&[
            "vm",
            "snapshot",
            "delete",
            "snapped",
            "before-upgrade",
            "--wait",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(left, serde_json::json!([]), "{left}");
    let (_, events) = app.vm_events(&id, "").await;
    let text = events.to_string();
    assert!(text.contains("\"SnapshotRestored\""), "{text}");
}

#[actix_rt::test]
async fn roles_are_added_changed_shown_and_deleted_and_config_is_read_and_set() {
    let app = spawn_app().await;
    let term = Terminal::new(&app);
    term.login().await;

    let catalog = term
        .run(&["roles", "permissions", "--json"])
        .await
        .ok()
        .json();
    assert!(
        catalog
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == "vm:read")),
        "{catalog}"
    );
    let added = term
        .run(&[
            "roles",
            "create",
            "operator",
            "--name",
            "Operator",
            "--permission",
            "vm:read",
            "--permission",
            "vm:start",
            "--scope",
            "all",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(added["id"], "operator");
    assert_eq!(added["scope"], "all");
    let changed = term
        .run(&[
            "roles",
            "update",
            "operator",
            "--rate-limit",
            "500",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(changed["rateLimit"], 500);
    assert_eq!(changed["name"], "Operator", "only what is given changes");
    let shown = term.run(&["roles", "get", "operator"]).await.ok();
    assert!(shown.stdout.contains("Operator"), "{}", shown.stdout);
    let listed = term.run(&["roles", "list"]).await.ok();
    assert!(
        listed.stdout.contains("operator") && listed.stdout.contains("viewer"),
        "{}",
        listed.stdout
    );
    term.run(&["roles", "delete", "operator"]).await.ok();
    let gone = term.run(&["roles", "get", "operator"]).await;
    assert_eq!(
        gone.code, 4,
        "a role that is gone is not found: {}",
        gone.stderr
    );
    let refused = term
        .run(&[
            "roles",
            "create",
            "Bad Id",
            "--name",
            "x",
            "--permission",
            "vm:read",
        ])
        .await;
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("VALIDATION_ERROR"),
        "{}",
        refused.stderr
    );

    let before = term.run(&["config", "get", "--json"]).await.ok().json();
    let set = term
        .run(&[
            "config",
            "set",
            "limits.requestsPerMinute=777",
            "system.maxVmsPerUser=9",
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(set["limits"]["requestsPerMinute"], 777);
    assert_eq!(set["system"]["maxVmsPerUser"], 9);
    assert!(
        set["version"].as_i64() > before["version"].as_i64(),
        "{before} -> {set}"
    );
    let shown = term.run(&["config", "get"]).await.ok();
    assert!(
        shown.stdout.contains("limits.requestsPerMinute = 777"),
        "{}",
        shown.stdout
    );
    let usage = term.run(&["config", "set", "requestsPerMinute=5"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
}
