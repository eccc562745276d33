//! Settings: defaults, overridden by an optional TOML file, overridden by `VOIDVM_*` environment
//! variables (nested keys with `__`, e.g. `VOIDVM_LIMITS__CPU_MAX`). A bad setting stops start-up
//! with one line that names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::hypervisor::accel::AccelSetting;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server binds (`VOIDVM_LISTEN`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// PostgreSQL URL (`VOIDVM_DATABASE_URL`); the database is created when missing.
    pub database_url: String,
    /// PostgreSQL connections this node may use for its work (`VOIDVM_DATABASE_CONNECTIONS`):
    /// half for the VM actors, the job workers and the background loops, half shared by the HTTP
    /// workers. Its five listeners and three locks hold eight more (`store::ConnectionBudget`).
    pub database_connections: u32,
    /// Disks, sockets, pid files and the generated JWT secret (`VOIDVM_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Base images, one folder per image name; defaults to `<data_dir>/images`.
    pub images_dir: Option<PathBuf>,
    /// Path of `qemu-system-x86_64` (`VOIDVM_QEMU`).
    pub qemu: PathBuf,
    /// Path of `qemu-img`.
    pub qemu_img: PathBuf,
    /// `auto` (KVM only when it really works), `kvm` or `tcg` (`VOIDVM_ACCEL`).
    pub accel: AccelSetting,
    /// HS256 secret (`VOIDVM_JWT_SECRET`); generated once and kept in the data dir when unset.
    pub jwt_secret: Option<String>,
    /// How long a token lives, in seconds.
    pub token_ttl_secs: u64,
    /// Worker actors carrying out jobs concurrently; 0 makes an API node (other nodes on the same
    /// database run the jobs it accepts).
    pub workers: usize,
    /// A job that fails for a reason that may pass is tried this many times in all.
    pub job_max_attempts: u32,
    /// This node's name among nodes sharing a database (`VOIDVM_NODE_ID`); its jobs are its own.
    /// Unset: made once and kept in `<data_dir>/node-id`, so a restarted node knows its jobs.
    pub node_id: Option<String>,
    /// Seconds a node's claim on a job holds without renewal (it renews every third of it); a
    /// node that stops renewing is taken for gone and its jobs are run by others.
    pub job_lease_secs: u64,
    /// A snapshot of a VM's state is kept every this many events.
    pub snapshot_every: usize,
    /// A VM actor with nothing to do stops after this many seconds (it is rebuilt on demand).
    pub actor_idle_secs: u64,
    /// Seconds a graceful stop waits for the guest before QEMU is told to quit.
    pub default_stop_timeout_secs: u64,
    pub limits: Limits,
    /// What a user may own unless `PUT /config` or the user's own quota says otherwise.
    pub quotas: QuotaSettings,
    /// Request rates, unless `PUT /config`, the role or the user says otherwise.
    pub rate_limit: RateLimitSettings,
    /// NATS server URL (`VOIDVM_NATS_URL`); committed events are published there.
    pub nats_url: String,
    pub nats: NatsSettings,
    pub ws: WsSettings,
    /// Milliseconds between samples of the host's CPU and memory kept for `/system/stats`
    /// (`VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS`).
    pub system_sample_interval_ms: u64,
    /// How log lines are written to stderr (`VOIDVM_LOG_FORMAT`): `text` or `json`.
    pub log_format: LogFormat,
    /// How webhook deliveries are sent and retried (`VOIDVM_WEBHOOKS__*`).
    pub webhooks: WebhookSettings,
    /// VMs' networks (`VOIDVM_NETWORK__*`).
    pub network: NetworkSettings,
    /// Image imports and uploads (`VOIDVM_IMAGES__*`).
    pub images: ImageSettings,
}

/// Image imports (`POST /images`) and uploads (`PUT /images/{name}/upload`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// The largest image accepted, in bytes, as downloaded or uploaded
    /// (`VOIDVM_IMAGES__MAX_BYTES`).
    pub max_bytes: u64,
    /// Whether imports may download from this host or private networks
    /// (`VOIDVM_IMAGES__ALLOW_PRIVATE`): off by default, as for webhooks.
    pub allow_private: bool,
    /// How long a download may go without receiving a byte, in seconds.
    pub stall_timeout_secs: u64,
}

impl Default for ImageSettings {
    fn default() -> Self {
        ImageSettings {
            max_bytes: 64 * 1024 * 1024 * 1024,
            allow_private: false,
            stall_timeout_secs: 60,
        }
    }
}

/// VMs' networks: the host ports forwards get when they name none, and the host bridges VMs may
/// join.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// First host port given to a forward without one (`VOIDVM_NETWORK__PORT_RANGE_START`);
    /// explicit host ports must be in the range too.
    pub port_range_start: u16,
    /// Last such port, included.
    pub port_range_end: u16,
    /// Existing host bridges `bridge`-mode VMs may join (`VOIDVM_NETWORK__BRIDGES=[br0,br1]`);
    /// the first is the default. Empty (the default): no VM may use `bridge` mode.
    #[serde(default)]
    pub bridges: Vec<String>,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        NetworkSettings {
            port_range_start: 20_000,
            port_range_end: 29_999,
            bridges: Vec::new(),
        }
    }
}

/// Whether `name` can be a Linux network interface: 1 to 15 letters, digits, `-`, `_` or `.`
/// (what `ip` is given is then never an option or a path).
pub fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Webhook deliveries: one node at a time sends them (whichever holds the lock).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Whether this node may send deliveries at all (`VOIDVM_WEBHOOKS__ENABLED`).
    pub enabled: bool,
    /// How long a receiver has to answer one delivery, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts per delivery before it is marked `failed` and the VM's next delivery goes.
    pub max_attempts: u32,
    /// The wait after the first failed attempt, in milliseconds; it doubles up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Deliveries in flight at once (never two of one VM to one webhook).
    pub concurrency: usize,
    /// Whether webhooks may point at this host or private networks (loopback, RFC 1918,
    /// link-local, unique local): off by default, so users cannot make the server probe them.
    pub allow_private: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            enabled: true,
            timeout_ms: 10_000,
            // 1 s doubling to 10 min: about two hours of retries.
            max_attempts: 20,
            backoff_base_ms: 1_000,
            backoff_max_ms: 600_000,
            concurrency: 16,
            allow_private: false,
        }
    }
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How events are laid out on NATS (see `src/bus/subjects.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// First token of every subject (`VOIDVM_NATS__PREFIX`); nodes sharing a database share it.
    pub prefix: String,
    /// The JetStream stream holding the event and job subjects.
    pub stream: String,
    /// How long the stream keeps messages, in seconds (the log in PostgreSQL keeps everything).
    pub retention_secs: u64,
    /// Events the relay publishes before it waits for their acknowledgements.
    pub relay_batch: u32,
    /// Whether this node runs the relay at all (`false` leaves publishing to other nodes).
    pub relay: bool,
}

/// The WebSocket feed's limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsSettings {
    /// Open connections a user may have at once.
    pub max_connections_per_user: usize,
    /// Frames waiting to be written to one connection.
    pub send_queue: usize,
    /// A connection whose queue stays full this long is closed as too slow.
    pub slow_after_ms: u64,
    /// Seconds between pings.
    pub ping_interval_secs: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout_secs: u64,
    /// Seconds a connection may take to send its `auth` message.
    pub auth_timeout_secs: u64,
    /// Bounds on a `system-monitor` subscription's `interval`, in milliseconds.
    pub monitor_min_interval_ms: u64,
    pub monitor_max_interval_ms: u64,
    /// Milliseconds between usage updates of running VMs on `vm-status` subscriptions.
    pub usage_interval_ms: u64,
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            prefix: "voidvm".to_string(),
            stream: "VOIDVM".to_string(),
            retention_secs: 7 * 24 * 3600,
            relay_batch: 256,
            relay: true,
        }
    }
}

impl Default for WsSettings {
    fn default() -> Self {
        WsSettings {
            max_connections_per_user: 10,
            send_queue: 1024,
            slow_after_ms: 10_000,
            ping_interval_secs: 15,
            idle_timeout_secs: 45,
            auth_timeout_secs: 10,
            monitor_min_interval_ms: 500,
            monitor_max_interval_ms: 60_000,
            usage_interval_ms: 5_000,
        }
    }
}

/// The default quota of a user whose role does not grant everything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// VMs a user may own (`VOIDVM_QUOTAS__VMS`).
    pub vms: u64,
    /// vCPUs over all of a user's VMs.
    pub vcpus: u64,
    /// Memory over all of a user's VMs, in MiB.
    pub memory_mib: u64,
    /// Disk over all of a user's VMs, in GiB.
    pub disk_gib: u64,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            vms: 5,
            vcpus: 16,
            memory_mib: 32 * 1024,
            disk_gib: 500,
        }
    }
}

/// Request rates (per node: each node counts its own requests).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests a minute per user, or per client address before login
    /// (`VOIDVM_RATE_LIMIT__REQUESTS_PER_MINUTE`).
    pub requests_per_minute: u32,
    /// Failed logins per username and per address before logins are refused for a while.
    pub login_failures: u32,
    /// How long, in seconds.
    pub login_lockout_secs: u64,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            requests_per_minute: 100,
            login_failures: 10,
            login_lockout_secs: 300,
        }
    }
}

/// Bounds on what a VM may ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub cpu_max: u32,
    pub memory_min_mib: u64,
    pub memory_max_mib: u64,
    pub disk_min_gib: u64,
    pub disk_max_gib: u64,
    pub name_max_len: usize,
    pub stop_timeout_max_secs: u64,
    /// Image names accepted for `os` besides the folders found under the images dir.
    pub known_images: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database_url: "postgres://postgres@127.0.0.1:5432/voidvm".to_string(),
            database_connections: 32,
            data_dir: PathBuf::from("./data"),
            images_dir: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            qemu_img: PathBuf::from("qemu-img"),
            accel: AccelSetting::Auto,
            jwt_secret: None,
            token_ttl_secs: 12 * 3600,
            workers: 4,
            job_max_attempts: 5,
            node_id: None,
            job_lease_secs: 30,
            snapshot_every: 50,
            actor_idle_secs: 300,
            default_stop_timeout_secs: 30,
            limits: Limits::default(),
            quotas: QuotaSettings::default(),
            rate_limit: RateLimitSettings::default(),
            nats_url: "nats://127.0.0.1:4222".to_string(),
            nats: NatsSettings::default(),
            ws: WsSettings::default(),
            system_sample_interval_ms: 10_000,
            log_format: LogFormat::Text,
            webhooks: WebhookSettings::default(),
            network: NetworkSettings::default(),
            images: ImageSettings::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_max: 64,
            memory_min_mib: 64,
            memory_max_mib: 256 * 1024,
            disk_min_gib: 1,
            disk_max_gib: 4096,
            name_max_len: 63,
            stop_timeout_max_secs: 3600,
            known_images: [
                "ubuntu20.04",
                "ubuntu22.04",
                "ubuntu24.04",
                "debian11",
                "debian12",
                "alpine3.20",
                "rocky9",
                "fedora40",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl Settings {
    /// Defaults, then the TOML file (when given), then `VOIDVM_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "the config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // `VOIDVM_URL` and `VOIDVM_TOKEN` belong to the client commands (`voidvm::cli`), not to
        // the server: a shell that exports them can still run `voidvm serve`.
        figment = figment.merge(
            Env::prefixed("VOIDVM_")
                .ignore(&["url", "token"])
                .split("__"),
        );
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(one_line(&e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_string()));
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return bad("database_url (VOIDVM_DATABASE_URL) must be a postgres:// URL");
        }
        if self.database_connections < crate::store::MIN_CONNECTIONS {
            return Err(ConfigError::Invalid(format!(
                "database_connections (VOIDVM_DATABASE_CONNECTIONS) must be at least {}",
                crate::store::MIN_CONNECTIONS
            )));
        }
        if self.snapshot_every == 0 {
            return bad("snapshot_every must be at least 1");
        }
        if self.job_max_attempts == 0 {
            return bad("job_max_attempts must be at least 1");
        }
        let w = &self.webhooks;
        if w.timeout_ms == 0 || w.max_attempts == 0 || w.concurrency == 0 || w.backoff_base_ms == 0
        {
            return bad("webhooks.timeout_ms, max_attempts, concurrency and backoff_base_ms (VOIDVM_WEBHOOKS__*) must be at least 1");
        }
        if w.backoff_max_ms < w.backoff_base_ms {
            return bad("webhooks.backoff_max_ms must be at least webhooks.backoff_base_ms");
        }
        if self.job_lease_secs < 2 {
            return bad("job_lease_secs (VOIDVM_JOB_LEASE_SECS) must be at least 2");
        }
        if let Some(node) = &self.node_id {
            if node.is_empty()
                || node.len() > 64
                || !node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return bad(
                    "node_id (VOIDVM_NODE_ID) must be 1 to 64 letters, digits, '-', '_' or '.'",
                );
            }
        }
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return bad("jwt_secret (VOIDVM_JWT_SECRET) must be at least 32 characters");
            }
        }
        if !crate::bus::subjects::is_token(&self.nats.prefix) {
            return bad("nats.prefix (VOIDVM_NATS__PREFIX) must be one subject token: letters, digits, '-' or '_'");
        }
        if !crate::bus::subjects::is_token(&self.nats.stream) {
            return bad("nats.stream must be letters, digits, '-' or '_'");
        }
        if self.nats.relay_batch == 0 {
            return bad("nats.relay_batch must be at least 1");
        }
        let ws = &self.ws;
        if ws.max_connections_per_user == 0 || ws.send_queue == 0 {
            return bad("ws.max_connections_per_user and ws.send_queue must be at least 1");
        }
        if ws.monitor_min_interval_ms == 0
            || ws.monitor_min_interval_ms > ws.monitor_max_interval_ms
        {
            return bad("ws.monitor_min_interval_ms must be at least 1 and at most ws.monitor_max_interval_ms");
        }
        if ws.ping_interval_secs == 0 || ws.idle_timeout_secs <= ws.ping_interval_secs {
            return bad("ws.idle_timeout_secs must be longer than ws.ping_interval_secs");
        }
        if self.system_sample_interval_ms < 100 {
            return bad(
                "system_sample_interval_ms (VOIDVM_SYSTEM_SAMPLE_INTERVAL_MS) must be at least 100",
            );
        }
        let l = &self.limits;
        if l.cpu_max == 0 || l.memory_min_mib > l.memory_max_mib || l.disk_min_gib > l.disk_max_gib
        {
            return bad("limits must have each minimum at or below its maximum");
        }
        let n = &self.network;
        if n.port_range_start == 0 || n.port_range_start > n.port_range_end {
            return bad(
                "network.port_range_start must be at least 1 and at most network.port_range_end",
            );
        }
        if !n.bridges.iter().all(|b| is_interface_name(b)) {
            return bad("network.bridges (VOIDVM_NETWORK__BRIDGES) must be interface names: 1 to 15 letters, digits, '-', '_' or '.'");
        }
        let r = &self.rate_limit;
        if r.requests_per_minute == 0 || r.login_failures == 0 || r.login_lockout_secs == 0 {
            return bad("rate_limit.requests_per_minute, login_failures and login_lockout_secs must be at least 1");
        }
        Ok(())
    }

    pub fn images_dir(&self) -> PathBuf {
        self.images_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("images"))
    }
}

/// figment's errors can span lines; start-up reports one.
fn one_line(e: &figment::Error) -> String {
    e.to_string().replace('\n', " ")
}
