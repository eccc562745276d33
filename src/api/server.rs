//! The HTTP server of a node: the API's routes and middleware, on `http_workers` threads, each
//! with its own database connections, every connection's socket behind [`HeadGuard`] and
//! [`SendDeadline`].
//!
//! Built from actix-http's `HttpService` rather than actix-web's `HttpServer`, because only there
//! can the socket be wrapped; the settings are `HttpServer`'s own defaults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{HttpService, Protocol};
use actix_service::{map_config, ServiceFactoryExt};
use actix_web::dev::{fn_service, AppConfig, Server};
use actix_web::middleware::{DefaultHeaders, ErrorHandlers};
use actix_web::{web, App};
use anyhow::Context;
use sqlx::PgPool;

use super::head_guard::HeadGuard;
use super::send_deadline::SendDeadline;
use crate::app::{AppState, NodeState};
use crate::store;

/// How long a stopping server lets requests in flight finish.
const SHUTDOWN_TIMEOUT_SECS: u64 = 10;

/// One HTTP worker per core.
fn http_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// How `total` connections are shared between the node's own pool and its HTTP workers.
pub fn connection_budget(total: u32) -> store::ConnectionBudget {
    store::ConnectionBudget::new(total, http_workers())
}

/// Binds `listen` and returns the server (not yet awaited) and the address it listens on; each
/// HTTP worker opens up to `budget.per_http_worker` connections of its own.
pub fn http_server(
    listen: SocketAddr,
    node_state: Arc<NodeState>,
    pool: &PgPool,
    budget: store::ConnectionBudget,
) -> anyhow::Result<(Server, SocketAddr)> {
    let http_workers = http_workers();
    let worker_connections = budget.per_http_worker;
    let connect_options = (*pool.connect_options()).clone();
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("the server could not listen on {listen}"))?;
    let addr = listener.local_addr().context("the server has no address")?;
    let builder = Server::build();
    // As `HttpServer` does: a graceful stop closes idle keep-alive connections at once instead of
    // waiting for their timeout.
    let graceful = builder.graceful_shutdown_signal();
    let server = builder
        .workers(http_workers)
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        // Signals are handled in `Application::run_until_stopped`: actix would stop the whole
        // actor system at once, before the background loops could end cleanly.
        .disable_signals()
        .listen("voidvm-http", listener, move || {
            // Runs on each worker's own thread: its pool's connections are opened there.
            let state = web::Data::new(AppState::for_worker(
                node_state.clone(),
                store::worker_pool(connect_options.clone(), worker_connections),
            ));
            let app = App::new()
                .wrap(actix_web::middleware::from_fn(
                    super::body_deadline::middleware,
                ))
                // Inside the budget: a request refused for its input counts, and its answer
                // carries the budget's headers like any other.
                .wrap(actix_web::middleware::from_fn(super::input::middleware))
                .wrap(actix_web::middleware::from_fn(
                    super::rate_limit::middleware,
                ))
                .wrap(ErrorHandlers::new().default_handler(super::bare_errors))
                .wrap(DefaultHeaders::new().add(("X-API-Version", super::API_VERSION)))
                .wrap(actix_web::middleware::from_fn(
                    super::request_id::middleware,
                ))
                .wrap(actix_web::middleware::from_fn(
                    crate::metrics::http::middleware,
                ))
                .wrap(tracing_actix_web::TracingLogger::<
                    super::request_span::RequestSpan,
                >::new())
                .app_data(state.clone())
                .app_data(super::body::json_config())
                .app_data(super::body::payload_config())
                .configure(super::routes);
            let graceful = graceful.clone();
            let http = HttpService::build()
                .graceful_shutdown_signal(move || {
                    let graceful = graceful.clone();
                    async move { graceful.notified().await }
                })
                .keep_alive(Duration::from_secs(5))
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .h1_allow_half_closed(true)
                .local_addr(addr)
                .finish(map_config(app, |_| AppConfig::default()));
            fn_service(|io: actix_web::rt::net::TcpStream| async move {
                let peer = io.peer_addr().ok();
                Ok::<_, DispatchError>((
                    HeadGuard::new(SendDeadline::new(io)),
                    Protocol::Http1,
                    peer,
                ))
            })
            .and_then(http)
        })
        .with_context(|| format!("the server could not serve on {addr}"))?
        .run();
    Ok((server, addr))
}
