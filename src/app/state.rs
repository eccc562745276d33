//! The application's state: what every REST handler and WebSocket connection can reach. The
//! node's part is built once by `startup` and shared by every HTTP worker; each worker adds its
//! own database connections (see [`AppState`]).

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::accounts::LiveConfig;
use crate::actors::VmRegistry;
use crate::api::rate_limit::RequestLimiter;
use crate::auth::login_guard::LoginGuard;
use crate::auth::{AuthCache, TokenKeys};
use crate::bus::ownership::StreamOwner;
use crate::bus::Hub;
use crate::config::Settings;
use crate::hypervisor::images::ImageCatalog;
use crate::hypervisor::Hypervisor;
use crate::metrics::Metrics;
use crate::system::SystemState;
use crate::ws::limits::ConnectionLimits;
use crate::ws::usage::UsageBoard;

/// What every handler can reach: the node's state, and the database connections of the HTTP
/// worker the request runs on.
///
/// Each HTTP worker is a single-threaded runtime, and a connection is registered with the
/// runtime that opened it: a query on a connection another runtime opened is woken through that
/// runtime's thread, a task switch between threads for every reply. Giving each worker its own
/// pool keeps a request and its queries on one thread (`benches/vm_read.rs` measured `GET
/// /vms/{id}` 1.45x faster with it).
pub struct AppState {
    node: Arc<NodeState>,
    /// This worker's connections (opened by it, on first use).
    pub pool: PgPool,
    /// This worker's reads of VM rows by id, batched (`store::vm_reads`).
    pub vm_reads: crate::store::vm_reads::VmReads,
}

impl AppState {
    pub fn for_worker(node: Arc<NodeState>, pool: PgPool) -> AppState {
        let vm_reads =
            crate::store::vm_reads::VmReads::new(pool.clone(), node.solo.cache().clone());
        AppState {
            node,
            vm_reads,
            pool,
        }
    }
}

impl Deref for AppState {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        &self.node
    }
}

/// What the node shares among its HTTP workers.
pub struct NodeState {
    pub settings: Settings,
    /// This node's id among nodes sharing the database.
    pub node_id: String,
    /// Whether this node writes alone (then it answers VM reads from its cache, `vm_row`).
    pub solo: Arc<crate::store::solo::SoloWriter>,
    /// The settings `PUT /config` changes, current on every node.
    pub live: Arc<LiveConfig>,
    /// Request budgets (per node).
    pub limiter: RequestLimiter,
    /// Failed logins per username and address (per node).
    pub login_guard: LoginGuard,
    pub registry: VmRegistry,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub images: ImageCatalog,
    /// Image imports, uploads and deletes.
    pub image_service: crate::images::service::SharedImages,
    pub tokens: TokenKeys,
    /// Users and revoked tokens, kept current by PostgreSQL notifications.
    pub auth: Arc<AuthCache>,
    pub job_events: broadcast::Sender<String>,
    /// Live events from NATS for WebSocket connections.
    pub hub: Arc<Hub>,
    /// Whether the NATS stream carries this database's log (`/ready` says when it does not).
    pub stream_owner: Arc<StreamOwner>,
    pub ws_limits: Arc<ConnectionLimits>,
    /// The VMs' serial and graphical consoles on this node.
    pub consoles: crate::console::Consoles,
    pub usage: Arc<UsageBoard>,
    /// Cancelled when the server begins to stop: WebSocket connections close with "going away".
    pub stopping: CancellationToken,
    /// What `/metrics` counts as it happens (the rate limiter counts refusals here).
    pub metrics: Arc<Metrics>,
    /// This node's id and host figures for `/system/*`.
    pub system: Arc<SystemState>,
}
