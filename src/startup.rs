//! Builds the whole application — database, actors, workers, hypervisor, HTTP server — on any
//! address (port 0 in tests) and tells the caller where it listens.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter};
use actix_web::dev::Server;
use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::LiveConfig;
use crate::actors::observer;
use crate::actors::worker::{self, JobWorker, WorkerDeps};
use crate::actors::VmRegistry;
use crate::api;
use crate::api::rate_limit::RequestLimiter;
use crate::app::NodeState;
use crate::auth::login_guard::LoginGuard;
use crate::auth::{self, AuthCache, TokenKeys};
use crate::bus::ownership::StreamOwner;
use crate::bus::relay::Relay;
use crate::bus::system::SystemEvents;
use crate::bus::{Bus, Hub};
use crate::config::Settings;
use crate::hypervisor::images::ImageCatalog;
use crate::hypervisor::qemu::{QemuConfig, QemuHypervisor};
use crate::hypervisor::{DiskSnapshots, Hypervisor, ObservationSender, QemuDiskSnapshots};
use crate::images::fetch::Fetcher;
use crate::images::service::{ImageService, SharedImages};
use crate::publish::AfterCommit;
use crate::store::{self, solo::SoloWriter, VmEventStore};
use crate::ws::limits::ConnectionLimits;
use crate::ws::usage::UsageBoard;

pub struct Application {
    addr: SocketAddr,
    node: String,
    observations: ObservationSender,
    server: Server,
    pool: PgPool,
    system_events: SystemEvents,
    stopping: CancellationToken,
    /// Cancelled by whoever owns the application to stop it as a signal would (tests).
    stop: CancellationToken,
    tasks: TaskTracker,
    arbiter: Arbiter,
    /// The relay's and the hub's thread.
    bus_arbiter: Arbiter,
    _shutdown: ShutdownGuard,
}

/// Ends the background loops (job dispatcher, listeners, observer) when the application goes
/// away, whether it stopped on a signal or was dropped (as in tests). They end on their own
/// runtime, so their database connections close cleanly.
struct ShutdownGuard(CancellationToken);

impl Drop for ShutdownGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "the data dir {} could not be created",
                settings.data_dir.display()
            )
        })?;
        let budget = api::server::connection_budget(settings.database_connections);
        let pool = store::connect_and_migrate(&settings.database_url, budget.node).await?;
        auth::ensure_admin(&pool).await?;
        let secret =
            auth::load_or_create_secret(settings.jwt_secret.as_deref(), &settings.data_dir)?;
        let tokens = TokenKeys::new(&secret, settings.token_ttl_secs);

        let (observations_tx, observations_rx) = mpsc::unbounded_channel();
        let qemu = QemuHypervisor::new(
            QemuConfig {
                qemu_binary: settings.qemu.clone(),
                qemu_img: settings.qemu_img.clone(),
                data_dir: settings.data_dir.clone(),
                accel: settings.accel,
            },
            observations_tx.clone(),
        )
        .await
        .context("QEMU could not be set up")?;
        let disk_snapshots: Arc<dyn DiskSnapshots> =
            Arc::new(QemuDiskSnapshots::new(qemu.config()));
        let hypervisor: Arc<dyn Hypervisor> = Arc::new(qemu);
        tracing::info!(qemu = %hypervisor.version(), accel = ?hypervisor.accel(), "hypervisor ready");
        let images = ImageCatalog::new(settings.images_dir());
        let image_service: SharedImages = Arc::new(ImageService::new(
            pool.clone(),
            images.clone(),
            settings.qemu_img.clone(),
            Fetcher::new(&settings.images)?,
            settings.images.max_bytes,
        ));
        crate::images::staging::sweep_at_start(&settings.images_dir()).await;
        crate::images::aside::finish_at_start(&pool, &settings.images_dir()).await;

        let log = store::log_identity::load(&pool)
            .await
            .context("the event log's id could not be read")?;
        let bus = Bus::connect(&settings, log).await?;
        let stream_owner = Arc::new(StreamOwner::new(bus.clone(), pool.clone()));
        let relay_wake = Arc::new(tokio::sync::Notify::new());

        // VM actors and workers live on their own arbiter, apart from the HTTP workers.
        let arbiter = Arbiter::new();
        let (notifier, notifications) = crate::notifier::Notifier::new();
        let solo = Arc::new(SoloWriter::default());
        let registry = VmRegistry::new(
            VmEventStore::for_node(
                pool.clone(),
                settings.snapshot_every,
                settings.images_dir(),
                solo.clone(),
            ),
            pool.clone(),
            settings.actor_idle_secs,
            Arc::new(AfterCommit {
                relay: relay_wake.clone(),
                notifier,
            }),
            arbiter.handle(),
        );

        // The node's connections, open on the actors' thread and with the commands' statements
        // planned before the first command (reconciliation's included) needs them; the
        // listeners take theirs from these too.
        let (warmed, warm) = tokio::sync::oneshot::channel();
        let warm_pool = pool.clone();
        arbiter.spawn(async move {
            let _ = warmed.send(store::warm::warm(&warm_pool, budget.node).await);
        });
        warm.await
            .context("the VM actors' thread stopped")?
            .context("the node's database connections could not be opened")?;

        let node = crate::node::load_or_create_id(settings.node_id.as_deref(), &settings.data_dir)?;
        let lease = store::jobs::Lease {
            node: node.clone(),
            duration: Duration::from_secs(settings.job_lease_secs),
        };
        crate::reconcile::on_startup(&pool, &node, &registry, &hypervisor)
            .await
            .context("start-up reconciliation failed")?;

        let shutdown = CancellationToken::new();
        // The background loops, so that a stop can wait for them to end on their own runtime
        // (a loop dropped by a runtime that is going away cannot close its connections).
        let tasks = TaskTracker::new();
        let keeper = solo
            .clone()
            .keep(pool.clone(), node.clone(), shutdown.clone());
        arbiter.spawn(tasks.track_future(keeper));
        solo.settled(Duration::from_secs(5)).await;
        arbiter.spawn(tasks.track_future(observer::observe(
            registry.clone(),
            pool.clone(),
            observations_rx,
            shutdown.clone(),
        )));
        arbiter.spawn(tasks.track_future(crate::notifier::run(
            pool.clone(),
            notifications,
            shutdown.clone(),
        )));
        let job_events = crate::job_events::channel();
        arbiter.spawn(tasks.track_future(crate::job_events::relay(
            pool.clone(),
            job_events.clone(),
            shutdown.clone(),
        )));
        let deps = Arc::new(WorkerDeps {
            pool: pool.clone(),
            registry: registry.clone(),
            hypervisor: hypervisor.clone(),
            disk_snapshots: disk_snapshots.clone(),
            images: images.clone(),
            max_attempts: settings.job_max_attempts,
            restart_stop_timeout: Duration::from_secs(settings.default_stop_timeout_secs),
            lease: lease.clone(),
            image_service: image_service.clone(),
        });
        let instance = nanoid::nanoid!(6, &auth::ID_ALPHABET);
        let workers: Vec<_> = (0..settings.workers)
            .map(|i| {
                let deps = deps.clone();
                let id = format!("{instance}-w{i}");
                JobWorker::start_in_arbiter(&arbiter.handle(), move |_| JobWorker::new(id, deps))
            })
            .collect();
        arbiter.spawn(tasks.track_future(worker::keep_leases(
            pool.clone(),
            lease,
            workers.clone(),
            shutdown.clone(),
        )));
        arbiter.spawn(tasks.track_future(worker::dispatch(
            pool.clone(),
            node.clone(),
            workers,
            shutdown.clone(),
        )));

        if settings.webhooks.enabled {
            let dispatcher = crate::webhooks::dispatcher::Dispatcher::over_http(
                pool.clone(),
                &settings.webhooks,
            )?;
            arbiter.spawn(tasks.track_future(dispatcher.run(shutdown.clone())));
        }
        // The relay and the hub (the log to NATS, NATS to the WebSocket connections) have one of
        // their own: on the actors' thread they took turns with the commands and their
        // statements, and under load one core waited while that thread worked (Benchmarks).
        let bus_arbiter = Arbiter::new();
        if settings.nats.relay {
            let relay = Relay::new(
                pool.clone(),
                bus.clone(),
                stream_owner.clone(),
                settings.nats.relay_batch,
                relay_wake,
            );
            bus_arbiter.spawn(tasks.track_future(relay.run(shutdown.clone())));
        }
        let auth_cache = AuthCache::new();
        arbiter
            .spawn(tasks.track_future(auth_cache.clone().listen(pool.clone(), shutdown.clone())));
        let hub = Hub::new(4096);
        bus_arbiter.spawn(tasks.track_future(hub.clone().run(
            bus.clone(),
            stream_owner.clone(),
            shutdown.clone(),
        )));
        let usage = Arc::new(UsageBoard::default());
        arbiter.spawn(tasks.track_future(usage.clone().run(
            pool.clone(),
            hypervisor.clone(),
            Duration::from_millis(settings.ws.usage_interval_ms.max(100)),
            shutdown.clone(),
        )));
        let system = Arc::new(crate::system::SystemState::new(
            node.clone(),
            settings.data_dir.clone(),
            settings.qemu.clone(),
        ));
        arbiter.spawn(tasks.track_future(crate::system::sampler::run(
            system.clone(),
            pool.clone(),
            Duration::from_millis(settings.system_sample_interval_ms),
            shutdown.clone(),
        )));
        let system_events = SystemEvents::new(bus, instance.clone());
        let stopping = CancellationToken::new();

        let live = LiveConfig::load(&settings, &pool)
            .await
            .context("the configuration could not be read")?;
        let live = Arc::new(live);
        arbiter.spawn(tasks.track_future(crate::accounts::live::follow(
            live.clone(),
            auth_cache.changes_of_config(),
            pool.clone(),
            shutdown.clone(),
        )));
        let node_state = Arc::new(NodeState {
            settings: settings.clone(),
            node_id: node.clone(),
            solo,
            live,
            limiter: RequestLimiter::default(),
            login_guard: LoginGuard::default(),
            registry,
            hypervisor,
            images,
            image_service,
            tokens,
            auth: auth_cache,
            job_events,
            hub,
            stream_owner,
            ws_limits: ConnectionLimits::new(settings.ws.max_connections_per_user),
            consoles: crate::console::Consoles::new(settings.data_dir.clone()),
            usage,
            stopping: stopping.clone(),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            system,
        });
        let (server, addr) = api::server::http_server(settings.listen, node_state, &pool, budget)?;
        system_events
            .emit(
                "node-started",
                format!("VoidVM {} listens on {addr}", env!("CARGO_PKG_VERSION")),
            )
            .await;
        Ok(Application {
            addr,
            node,
            observations: observations_tx,
            server,
            pool,
            system_events,
            stopping,
            stop: CancellationToken::new(),
            tasks,
            arbiter,
            bus_arbiter,
            _shutdown: ShutdownGuard(shutdown),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cancelling it stops `run_until_stopped` as SIGTERM would (an in-process server in tests).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Where the hypervisor's watchers deliver what they observe. Tests deliver an observation
    /// through it late, to force the races between a process's exit and the next start.
    pub fn observations(&self) -> ObservationSender {
        self.observations.clone()
    }

    /// Serves until SIGINT/SIGTERM, then hands running jobs back to the queue. VMs keep running.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            served = &mut server => served.context("the HTTP server failed")?,
            signal = stop_signal(&self.stop) => {
                tracing::info!(signal, "stopping: no new requests, finishing the ones in flight");
                self.stopping.cancel();
                // The command is sent at once; the server must be polled to carry it out.
                let stopped = handle.stop(true);
                server.await.context("the HTTP server failed")?;
                stopped.await;
            }
        }
        self.system_events
            .emit(
                "node-stopping",
                "VoidVM is stopping; virtual machines keep running",
            )
            .await;
        // The loops end on their own runtime, closing their connections, before it goes away.
        self._shutdown.0.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background loops did not end within 10 s");
        }
        // Their loops have ended: the relay's and the hub's thread goes first, then the VM
        // actors and workers end with theirs.
        end_thread(self.bus_arbiter, "the relay's and the hub's").await;
        end_thread(self.arbiter, "the actors'").await;
        crate::node::hand_back_jobs(&self.pool, &self.node).await;
        // Every connection is back (their users are gone): close them while this runtime runs.
        self.pool.close().await;
        tracing::info!("VoidVM stopped; virtual machines keep running");
        Ok(())
    }
}

/// Stops `arbiter` and waits for its thread (`whose`, for the warning if it did not end cleanly).
async fn end_thread(arbiter: Arbiter, whose: &str) {
    arbiter.stop();
    if !matches!(
        tokio::task::spawn_blocking(move || arbiter.join()).await,
        Ok(Ok(()))
    ) {
        tracing::warn!("{whose} thread did not end cleanly");
    }
}

/// Resolves on SIGINT, SIGTERM or `stop`, naming it.
async fn stop_signal(stop: &CancellationToken) -> &'static str {
    tokio::select! {
        signal = os_signal() => signal,
        () = stop.cancelled() => "a stop request",
    }
}

async fn os_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("signal handlers could not be installed; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
