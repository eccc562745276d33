//! A lean HTTP/1.1 load client: one hyper connection per simulated client, opened before the
//! clock starts (as pgbench opens its connections), and each request built from parts made once.
//!
//! The load harnesses' clients share the machine with the server and PostgreSQL, where pgbench's
//! client is a small C program. With reqwest (its pool, URL parsing, a timer per request), the
//! clients took 7 to 12% of the 2 cores under 64 connections of commands (`perf record -a`),
//! time the server and PostgreSQL then did not get. This client sends the same requests with
//! less of that: what it still costs is hyper's HTTP/1.1 and the kernel's TCP.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// One request of a load: its method, its path (with the query), and a JSON body if any.
pub struct Call {
    pub method: Method,
    pub path: String,
    pub json: Option<Bytes>,
}

/// Makes the `n`th request of a load.
pub type MakeCall = Arc<dyn Fn(usize) -> Call + Send + Sync>;

/// What one load measured: how many requests, the wall time from the first request to the last
/// answer (connections already open), and each request's time from sending to the end of its
/// answer's body.
pub struct Measured {
    pub requests: usize,
    pub wall: Duration,
    pub latencies: Vec<Duration>,
    /// For each request: its connection, when it was sent (from the clock's start) and how long
    /// it took.
    pub trace: Vec<(usize, Duration, Duration)>,
    /// When the clock started, by the wall clock: lines the trace up with samples taken outside
    /// the process (PostgreSQL's wait events, the disk's counters).
    pub began_at: SystemTime,
}

impl Measured {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Sends `requests` requests to `addr` as `token`'s bearer from `connections` concurrent
/// connections, request `n` made by `make(n)`; each must answer `expect`. The connections are
/// opened first, and the clock starts when all are open.
pub async fn load(
    addr: SocketAddr,
    token: &str,
    connections: usize,
    requests: usize,
    make: MakeCall,
    expect: u16,
) -> Measured {
    let host = HeaderValue::from_str(&addr.to_string()).expect("a Host header");
    let mut auth = HeaderValue::from_str(&format!("Bearer {token}")).expect("a bearer header");
    auth.set_sensitive(true);
    let json = HeaderValue::from_static("application/json");
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    let began_at = SystemTime::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(connection, mut sender)| {
            let (make, next) = (make.clone(), next.clone());
            let (host, auth, json) = (host.clone(), auth.clone(), json.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        return times;
                    }
                    let call = make(n);
                    let mut request = Request::builder()
                        .method(call.method)
                        .uri(call.path)
                        .header(HOST, host.clone())
                        .header(AUTHORIZATION, auth.clone());
                    if call.json.is_some() {
                        request = request.header(CONTENT_TYPE, json.clone());
                    }
                    let request = request
                        .body(Full::new(call.json.unwrap_or_default()))
                        .expect("a request");
                    let t0 = Instant::now();
                    sender.ready().await.expect("the connection stays open");
                    let response = sender.send_request(request).await.expect("an answer");
                    let status = response.status().as_u16();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .expect("an answer's body")
                        .to_bytes();
                    times.push((connection, t0 - began, t0.elapsed()));
                    assert_eq!(
                        status,
                        expect,
                        "request {n} answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            })
        })
        .collect();
    let mut trace = Vec::with_capacity(requests);
    for task in tasks {
        trace.extend(task.await.expect("a load client"));
    }
    Measured {
        requests,
        wall: began.elapsed(),
        latencies: trace.iter().map(|(_, _, took)| *took).collect(),
        trace,
        began_at,
    }
}

/// An HTTP/1.1 connection to `addr`, its driver running on this runtime until the sender goes.
async fn connect(addr: SocketAddr) -> Sender {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}
