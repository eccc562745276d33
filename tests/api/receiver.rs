//! A webhook receiver for the tests: a real HTTP server on a local port that records every
//! request it gets and answers as the test tells it (accept, fail, answer slowly); it can also
//! start late, on a port deliveries were already refused at.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// How the receiver answers the next requests.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    Accept,
    /// Answers this status.
    Fail(u16),
    /// Accepts after this long (past the server's timeout, the attempt fails).
    Slow(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether it was answered 2xx in time (a `Slow` answer counts as not).
    pub accepted: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a delivery body is JSON")
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    received: Vec<Received>,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    server: Option<actix_web::dev::ServerHandle>,
}

impl Receiver {
    /// A receiver on a free port that accepts everything unless scripted otherwise.
    pub async fn start() -> Receiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Receiver::start_on(port).await
    }

    /// A port nobody listens on (yet): deliveries to it are refused until [`Receiver::start_on`].
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    pub async fn start_on(port: u16) -> Receiver {
        let mut receiver = Receiver {
            port,
            state: Arc::default(),
            server: None,
        };
        receiver.listen().await;
        receiver
    }

    async fn listen(&mut self) {
        let state = self.state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", self.port))
        .expect("the receiver's port")
        .run();
        self.server = Some(server.handle());
        actix_rt::spawn(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next requests are answered like this, in order; then accepted.
    pub fn script(&self, answers: &[Answer]) {
        self.lock().script.extend(answers.iter().copied());
    }

    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.accepted).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            drop(server.stop(false));
        }
    }
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<State>>>,
) -> HttpResponse {
    let answer = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        state.script.pop_front().unwrap_or(Answer::Accept)
    };
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let accepted = matches!(answer, Answer::Accept);
    state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .received
        .push(Received {
            headers,
            body: body.to_vec(),
            accepted,
        });
    match answer {
        Answer::Accept => HttpResponse::NoContent().finish(),
        Answer::Fail(status) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("a status"))
                .body("no")
        }
        Answer::Slow(wait) => {
            tokio::time::sleep(wait).await;
            HttpResponse::Ok().finish()
        }
    }
}
