//! Latency harness for the real-time feed, against a live VoidVM on a fresh database.
//!
//! `cargo bench --bench ws_latency` reports commit -> WebSocket delivery latency, p50 and p99,
//! with 100 and with 1,000 subscribers to one VM's `vm-status`, next to a baseline measured in the
//! same run: a bare NATS publish -> subscribe round trip in this process. A commit is a
//! `PATCH /api/v1/vms/{id}` (one `VmReconfigured` event); the clock starts before the request is
//! sent, so every figure includes the HTTP request and the commit itself, then the relay, NATS,
//! the hub and the WebSocket write.
//! Under `cargo test` (no `--bench`) it runs the same path at a small scale, as a smoke test, and
//! fails if any subscriber misses an event.

mod common;
use common::{login, ms, percentiles, Run, NATS_URL};

use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use voidvm::config::{NatsSettings, Settings, WsSettings};
use voidvm::hypervisor::accel::AccelSetting;
use voidvm::startup::Application;

struct Scale {
    baseline_samples: usize,
    subscribers: Vec<usize>,
    /// Commits measured per subscriber count.
    samples: usize,
    /// Rest between two commits.
    pause: Duration,
}

/// Connections opened at once while subscribers are set up.
const OPENING_AT_ONCE: usize = 64;
/// Unrecorded commits before each measurement (and round trips before the baseline).
const WARMUP: usize = 3;
/// How long one commit may take to reach every subscriber before the run fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one subscriber may take to connect and subscribe.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench {
        Scale {
            baseline_samples: 500,
            subscribers: vec![100, 1_000],
            samples: 200,
            pause: Duration::from_millis(10),
        }
    } else {
        Scale {
            baseline_samples: 50,
            subscribers: vec![5, 20],
            samples: 10,
            pause: Duration::from_millis(2),
        }
    };
    let most = scale.subscribers.iter().copied().max().unwrap_or(0);
    check_open_files(most);
    // The clients run on their own runtime, apart from the server's threads.
    let clients = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ws-latency-client")
        .build()
        .expect("the clients' runtime");
    let system = actix_rt::System::new();
    let outcome = system.block_on(run(scale, clients.handle().clone()));
    clients.shutdown_timeout(Duration::from_secs(5));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Each subscriber holds two descriptors in this process: its socket and the server's end.
fn check_open_files(subscribers: usize) {
    let need = 2 * subscribers as u64 + 512;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= need,
            "{subscribers} subscribers need about {need} open files in this process, but the limit \
             is {soft}; raise it (e.g. `ulimit -n {need}`) and run again"
        );
    }
}

async fn run(scale: Scale, clients: tokio::runtime::Handle) -> Result<(), Box<dyn Any + Send>> {
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/images");
    assert!(
        images.join("busybox").is_dir(),
        "the test guest is missing ({}); run scripts/setup.sh first",
        images.join("busybox").display()
    );
    let Run {
        short, db, cleanup, ..
    } = Run::new().await;
    let url = db.url.clone();
    // This run's own NATS subjects and stream, so it never meets another run or a test.
    let prefix = format!("b{short}");
    let most = scale.subscribers.iter().copied().max().unwrap_or(0);
    let settings = Settings {
        listen: "127.0.0.1:0".parse().expect("an address"),
        database_url: url,
        data_dir: cleanup.data_dir.clone(),
        images_dir: Some(images),
        accel: AccelSetting::Tcg,
        jwt_secret: Some("bench-secret-bench-secret-bench-secret-00".into()),
        // One user sending as fast as it can: the per-user budget is not what is measured.
        rate_limit: voidvm::config::RateLimitSettings {
            requests_per_minute: 100_000_000,
            login_failures: 100_000_000,
            ..voidvm::config::RateLimitSettings::default()
        },
        workers: 2,
        nats_url: NATS_URL.to_string(),
        nats: NatsSettings {
            prefix: prefix.clone(),
            stream: cleanup.stream.clone(),
            retention_secs: 3600,
            ..NatsSettings::default()
        },
        ws: WsSettings {
            max_connections_per_user: (2 * most).max(2_000),
            ..WsSettings::default()
        },
        ..Settings::default()
    };
    let app = Application::build(settings).await.expect(
        "the application (PostgreSQL on 127.0.0.1:5432 and NATS with JetStream on \
         127.0.0.1:4222 must be running)",
    );
    let addr = app.addr().to_string();
    let server = actix_rt::spawn(app.run_until_stopped());

    let outcome = clients.spawn(measure(scale, addr, prefix)).await;

    // Dropping the application cancels its background loops (the relay and the hub among them),
    // which end on their own runtime, so nothing creates the stream again once it is deleted.
    // (A SIGTERM would stop the whole actix system too, and its arbiters with those loops still
    // in them.)
    server.abort();
    let _ = server.await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    drop(cleanup);
    drop(db);
    outcome.map_err(|e| match e.try_into_panic() {
        Ok(panic) => panic,
        Err(e) => Box::new(format!("the measurement did not finish: {e}")),
    })
}

/// What a subscriber tells the measuring task.
enum Note {
    Ready,
    Failed(usize, String),
    /// A `vm-status` frame from the log: its position, the description it carries, and when it
    /// arrived.
    Frame {
        sub: usize,
        position: i64,
        description: Option<String>,
        at: Instant,
    },
    Closed(usize, String),
}

struct Fanout {
    subscribers: usize,
    setup: Duration,
    /// Every subscriber's latency for every commit.
    deliveries: Vec<Duration>,
    /// The slowest subscriber's latency, per commit: when the fan-out was complete.
    slowest: Vec<Duration>,
    /// The PATCH round trips alone.
    patch: Vec<Duration>,
}

async fn measure(scale: Scale, addr: String, prefix: String) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("machine: {cores} cores");

    let nats = async_nats::connect(NATS_URL)
        .await
        .unwrap_or_else(|e| panic!("NATS must be running on {NATS_URL} ({e})"));
    let mut baseline = nats_round_trips(
        &nats,
        &format!("{prefix}.bench.baseline"),
        scale.baseline_samples,
    )
    .await;
    println!(
        "NATS baseline: {} publish -> subscribe round trips",
        baseline.len()
    );

    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("an HTTP client");
    let token = login(&http, &base).await;
    let vm_id = create_vm(&http, &base, &token).await;
    println!("VM {vm_id} provisioned");

    let mut fanouts = Vec::new();
    for &subscribers in &scale.subscribers {
        let fanout = fan_out(&http, &base, &token, &vm_id, subscribers, &scale).await;
        println!(
            "{subscribers} subscribers: connected and subscribed in {:.2} s, {} commits delivered to all",
            fanout.setup.as_secs_f64(),
            fanout.slowest.len()
        );
        fanouts.push(fanout);
    }

    let (base_p50, _) = percentiles(&mut baseline);
    println!(
        "\n{:<34} {:>8} {:>9} {:>9} {:>11} {:>11}",
        "measure", "samples", "p50 ms", "p99 ms", "p50 / base", "p99 / base"
    );
    let row = |name: &str, times: &mut Vec<Duration>| {
        let (p50, p99) = percentiles(times);
        println!(
            "{:<34} {:>8} {:>9.3} {:>9.3} {:>10.1}x {:>10.1}x",
            name,
            times.len(),
            ms(p50),
            ms(p99),
            p50.as_secs_f64() / base_p50.as_secs_f64(),
            p99.as_secs_f64() / base_p50.as_secs_f64()
        );
    };
    row("NATS publish -> subscribe (base)", &mut baseline);
    for f in &mut fanouts {
        let s = f.subscribers;
        row(&format!("{s} subs: every delivery"), &mut f.deliveries);
        row(&format!("{s} subs: slowest per commit"), &mut f.slowest);
        row(&format!("{s} subs: PATCH response alone"), &mut f.patch);
    }
    println!(
        "\nbase = the NATS baseline p50 ({:.3} ms), measured in this run on this machine ({cores} cores).\n\
         Delivery latency runs from just before the PATCH is sent (the PATCH commits the event) to the\n\
         frame's arrival at a subscriber: it includes the HTTP request and the commit, the relay's\n\
         publish to JetStream, the hub and the WebSocket write. \"slowest per commit\" is the last\n\
         subscriber's arrival (fan-out complete); \"PATCH response alone\" is the same requests' HTTP\n\
         round trip. The clients run in the server's process, on {cores} cores shared with it.",
        ms(base_p50)
    );
}

/// Publish -> receive times through core NATS, on a subject nobody else uses.
async fn nats_round_trips(
    nats: &async_nats::Client,
    subject: &str,
    samples: usize,
) -> Vec<Duration> {
    let mut sub = nats
        .subscribe(subject.to_string())
        .await
        .expect("a NATS subscription");
    // The subscription is in place at the server before the first message.
    nats.flush().await.expect("a NATS flush");
    let mut times = Vec::with_capacity(samples);
    for n in 0..WARMUP + samples {
        let payload = format!("{n}");
        let t0 = Instant::now();
        nats.publish(subject.to_string(), payload.clone().into())
            .await
            .expect("a NATS publish");
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("NATS did not deliver baseline message {n} within 10 s"))
            .expect("the NATS subscription ended");
        let elapsed = t0.elapsed();
        assert_eq!(
            msg.payload.as_ref(),
            payload.as_bytes(),
            "NATS delivered the wrong baseline message"
        );
        if n >= WARMUP {
            times.push(elapsed);
        }
    }
    let _ = sub.unsubscribe().await;
    times
}

/// Creates a VM from the test guest and waits for its provisioning job.
async fn create_vm(http: &reqwest::Client, base: &str, token: &str) -> String {
    let resp = http
        .post(format!("{base}/api/v1/vms"))
        .bearer_auth(token)
        .json(&json!({"name": "ws-latency", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox"}))
        .send()
        .await
        .expect("POST /vms");
    let status = resp.status();
    let body: Value = resp.json().await.expect("the created VM");
    assert_eq!(status.as_u16(), 201, "the VM could not be created: {body}");
    let vm_id = body["data"]["id"].as_str().expect("a VM id").to_string();
    let job_id = body["data"]["jobId"].as_str().expect("a job id");
    let resp = http
        .get(format!("{base}/api/v1/jobs/{job_id}/wait?timeout=60"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /jobs/{id}/wait");
    let job: Value = resp.json().await.expect("the job");
    assert_eq!(
        job["data"]["finished"], true,
        "the provisioning job did not end in 60 s: {job}"
    );
    assert_eq!(
        job["data"]["status"], "succeeded",
        "the provisioning job failed: {job}"
    );
    vm_id
}

/// Opens `subscribers` connections to the VM's `vm-status`, commits `scale.samples` times, and
/// times each commit's arrival at every subscriber. Closes the connections before it returns.
async fn fan_out(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    vm_id: &str,
    subscribers: usize,
    scale: &Scale,
) -> Fanout {
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<Note>();
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(OPENING_AT_ONCE));
    let url = format!("{}/ws?token={token}", base.replacen("http://", "ws://", 1));
    let opened = Instant::now();
    let tasks: Vec<_> = (0..subscribers)
        .map(|i| {
            tokio::spawn(subscriber(
                i,
                url.clone(),
                vm_id.to_string(),
                gate.clone(),
                notes_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(notes_tx);
    let mut ready = 0;
    while ready < subscribers {
        match tokio::time::timeout(SETUP_TIMEOUT, notes.recv()).await {
            Err(_) => panic!(
                "only {ready} of {subscribers} subscribers were connected and subscribed after \
                 {SETUP_TIMEOUT:?} without progress"
            ),
            Ok(None) => panic!("the subscribers ended before all of them were ready"),
            Ok(Some(Note::Ready)) => ready += 1,
            Ok(Some(Note::Failed(i, why))) => {
                panic!("subscriber {i} of {subscribers} could not be set up ({ready} were ready): {why}")
            }
            Ok(Some(Note::Frame { sub, position, .. })) => {
                panic!("subscriber {sub} got an event (position {position}) before any commit")
            }
            Ok(Some(Note::Closed(i, why))) => {
                panic!("subscriber {i} of {subscribers} was disconnected during set-up: {why}")
            }
        }
    }
    let setup = opened.elapsed();

    let mut fanout = Fanout {
        subscribers,
        setup,
        deliveries: Vec::with_capacity(subscribers * scale.samples),
        slowest: Vec::with_capacity(scale.samples),
        patch: Vec::with_capacity(scale.samples),
    };
    let mut last = i64::MIN;
    for n in 0..WARMUP + scale.samples {
        let description = format!("{subscribers} subscribers, sample {n}");
        let t0 = Instant::now();
        let resp = http
            .patch(format!("{base}/api/v1/vms/{vm_id}"))
            .bearer_auth(token)
            .json(&json!({ "description": description }))
            .send()
            .await
            .expect("PATCH /vms/{id}");
        let status = resp.status();
        let body = resp.text().await.expect("the PATCH answer");
        let patched = t0.elapsed();
        assert_eq!(status.as_u16(), 200, "the PATCH was refused: {body}");

        let mut arrivals: Vec<Option<Instant>> = vec![None; subscribers];
        let mut position = None;
        let mut got = 0;
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        while got < subscribers {
            let note = match tokio::time::timeout_at(deadline, notes.recv()).await {
                Ok(Some(note)) => note,
                Ok(None) => panic!("every subscriber ended during the run"),
                Err(_) => {
                    let missing: Vec<usize> = (0..subscribers)
                        .filter(|i| arrivals[*i].is_none())
                        .take(10)
                        .collect();
                    panic!(
                        "commit {n} ({description:?}) reached only {got} of {subscribers} \
                         subscribers within {DELIVERY_TIMEOUT:?}; missing e.g. {missing:?}"
                    )
                }
            };
            match note {
                Note::Frame {
                    sub,
                    position: p,
                    description: d,
                    at,
                } => {
                    assert!(
                        p > last,
                        "subscriber {sub} got position {p} again or out of order (the last commit was at {last})"
                    );
                    let expected = *position.get_or_insert(p);
                    assert_eq!(
                        p, expected,
                        "subscriber {sub} got position {p} while others got {expected}: one event per commit was expected"
                    );
                    assert_eq!(
                        d.as_deref(),
                        Some(description.as_str()),
                        "subscriber {sub} got an event at position {p} that is not commit {n}"
                    );
                    assert!(
                        arrivals[sub].replace(at).is_none(),
                        "subscriber {sub} got position {p} twice"
                    );
                    got += 1;
                }
                Note::Closed(sub, why) => {
                    panic!("subscriber {sub} was disconnected during the run: {why}")
                }
                Note::Failed(sub, why) => panic!("subscriber {sub} failed: {why}"),
                Note::Ready => panic!("a subscriber became ready twice"),
            }
        }
        last = position.expect("a position");
        if n >= WARMUP {
            let times: Vec<Duration> = arrivals
                .into_iter()
                .map(|at| at.expect("every subscriber has reported") - t0)
                .collect();
            fanout.slowest.push(
                times
                    .iter()
                    .copied()
                    .max()
                    .expect("at least one subscriber"),
            );
            fanout.deliveries.extend(times);
            fanout.patch.push(patched);
        }
        tokio::time::sleep(scale.pause).await;
    }

    stop.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a subscriber did not close within 30 s")
            .expect("a subscriber task failed");
    }
    fanout
}

/// One WebSocket client: connects, subscribes to the VM, then reports every `vm-status` frame
/// that carries a position until told to stop.
async fn subscriber(
    index: usize,
    url: String,
    vm_id: String,
    gate: Arc<Semaphore>,
    notes: mpsc::UnboundedSender<Note>,
    stop: CancellationToken,
) {
    let permit = gate.acquire_owned().await.expect("the opening gate");
    let mut ws = match tokio::time::timeout(SETUP_TIMEOUT, open(&url, &vm_id)).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(why)) => {
            let _ = notes.send(Note::Failed(index, why));
            return;
        }
        Err(_) => {
            let _ = notes.send(Note::Failed(
                index,
                format!("not subscribed within {SETUP_TIMEOUT:?}"),
            ));
            return;
        }
    };
    drop(permit);
    let _ = notes.send(Note::Ready);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
            msg = ws.next() => {
                let at = Instant::now();
                match msg {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = match serde_json::from_str(&text) {
                            Ok(frame) => frame,
                            Err(e) => {
                                let _ = notes.send(Note::Closed(index, format!("a frame that is not JSON ({e}): {text}")));
                                return;
                            }
                        };
                        if frame["type"] == "vm-status" {
                            if let Some(position) = frame["data"]["position"].as_i64() {
                                let description = frame["data"]["data"]["description"]
                                    .as_str()
                                    .map(str::to_string);
                                let _ = notes.send(Note::Frame { sub: index, position, description, at });
                            }
                        }
                    }
                    Some(Ok(Message::Close(close))) => {
                        let _ = notes.send(Note::Closed(index, format!("the server closed the connection: {close:?}")));
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        let _ = notes.send(Note::Closed(index, format!("the connection failed: {e}")));
                        return;
                    }
                    None => {
                        let _ = notes.send(Note::Closed(index, "the connection ended".into()));
                        return;
                    }
                }
            }
        }
    }
}

/// Connects, reads `authenticated`, subscribes to the VM's `vm-status` and waits for `subscribed`.
async fn open(url: &str, vm_id: &str) -> Result<WsStream, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => format!(
                "the upgrade was refused with {}: {}",
                resp.status(),
                resp.body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default()
            ),
            e => format!("the connection failed: {e}"),
        })?;
    let hello = next_frame(&mut ws).await?;
    if hello["type"] != "authenticated" {
        return Err(format!("the first frame is not `authenticated`: {hello}"));
    }
    let subscribe =
        json!({"type": "subscribe", "data": {"topic": "vm-status", "vmId": vm_id}, "id": "s"});
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| format!("the subscription could not be sent: {e}"))?;
    loop {
        let frame = next_frame(&mut ws).await?;
        match frame["type"].as_str() {
            Some("subscribed") if frame["id"] == "s" => return Ok(ws),
            Some("error") => return Err(format!("the subscription was refused: {frame}")),
            _ => continue,
        }
    }
}

async fn next_frame(ws: &mut WsStream) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))
            }
            Some(Ok(Message::Close(close))) => {
                return Err(format!("the server closed the connection: {close:?}"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("the connection failed: {e}")),
            None => return Err("the connection ended".into()),
        }
    }
}
