//! The client subcommands' command line (clap derive). `src/main.rs` flattens [`ClientCommand`]
//! and [`GlobalArgs`] into the `voidvm` binary next to `serve`; nothing here does any work.

use clap::{Args, Subcommand};

/// What `voidvm --help` says about exit statuses (also in the README).
pub const EXIT_CODES_HELP: &str = "\
Exit status of the client commands:
  0  success
  1  the API refused the request (400, 403, 422, 429, ...)
  2  usage error (bad flags or arguments; an ambiguous VM name)
  3  not logged in, or the token was refused (401)
  4  not found (404: no such VM, job or user)
  5  conflict (409: e.g. the VM is already running or busy)
  6  a job followed with --wait failed, was cancelled or did not end in time
  7  the server cannot be reached, or answered 5xx
  8  a local problem (credentials file, an unexpected answer)";

/// Flags every client command takes.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Client options")]
pub struct GlobalArgs {
    /// The server, e.g. http://localhost:3000 (default: the one `voidvm login` stored).
    #[arg(long, global = true, env = "VOIDVM_URL")]
    pub url: Option<String>,
    /// A token to use instead of the stored one.
    #[arg(long, global = true, env = "VOIDVM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the answer's `data` as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Logs in and keeps the server URL and token in the user's config directory.
    Login(LoginArgs),
    /// Revokes the stored token and deletes the credentials file.
    Logout,
    /// Virtual machines.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Jobs (every VM command is carried out as one); `voidvm jobs` lists them.
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
    },
    /// The event log; `--follow` streams new events over the WebSocket feed.
    Events(EventsArgs),
    /// The event log as log lines for people.
    Logs(LogsArgs),
    /// User accounts (admins).
    #[command(subcommand)]
    Users(UsersCommand),
    /// Webhooks: HTTP receivers of your VMs' events, and their deliveries.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Images VMs are made from: base disks, ISOs and kernels (adding and deleting: admins).
    #[command(subcommand)]
    Images(ImagesCommand),
    /// Roles and the permissions they grant (admins).
    #[command(subcommand)]
    Roles(super::roles::RolesCommand),
    /// The settings that change while the server runs (admins).
    #[command(subcommand)]
    Config(super::config::ConfigCommand),
}

#[derive(Subcommand, Debug)]
pub enum ImagesCommand {
    /// Lists every image: imported, uploaded and found on the host's disk.
    List,
    /// Shows one image.
    Get { name: String },
    /// Imports an image from an http or https URL (a job downloads, checks and installs it).
    Import {
        name: String,
        /// Where to download it from.
        #[arg(long = "from", value_name = "URL")]
        from: String,
        #[command(flatten)]
        what: ImageWhat,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Uploads an image from a local file (installed when the command returns).
    Upload {
        name: String,
        /// The file to send.
        file: std::path::PathBuf,
        #[command(flatten)]
        what: ImageWhat,
    },
    /// Deletes an image (refused while a VM uses it).
    Delete { name: String },
}

/// What an image to add is, and how to check it.
#[derive(Args, Debug, Clone)]
pub struct ImageWhat {
    /// disk, iso or kernel.
    #[arg(long, default_value = "disk")]
    pub kind: String,
    /// Disks only: qcow2, raw, vmdk, vdi, vhdx or vpc (qemu-img tells when absent).
    #[arg(long)]
    pub format: Option<String>,
    /// The SHA-256 the bytes must have.
    #[arg(long)]
    pub sha256: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The user (asked for on a terminal when absent).
    #[arg(long, short)]
    pub username: Option<String>,
    /// Read the password from stdin (the first line) instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

/// Following a job: `--wait` and how long at most.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Follow the job until it ends, printing its progress to stderr.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit status 6).
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub wait_timeout: u64,
}

#[derive(Args, Debug)]
pub struct VmTarget {
    /// The VM's id, or its name (a value starting with `vm-` is taken as an id).
    pub vm: String,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Subcommand, Debug)]
pub enum VmCommand {
    /// Lists the VMs you can see.
    List {
        /// Only VMs in this status (e.g. running).
        #[arg(long)]
        status: Option<String>,
    },
    /// Creates a VM from an image.
    Create {
        #[arg(long)]
        name: String,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        cpu: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 512)]
        memory: u64,
        /// Disk size in GiB.
        #[arg(long, default_value_t = 10)]
        disk: u64,
        /// The image (template) name, e.g. ubuntu20.04.
        #[arg(long)]
        os: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        cloud_init: CloudInitArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Changes a VM's settings (PATCH); CPU, memory and cloud-init changes to a running VM
    /// apply at its next start.
    Update {
        /// The VM's id or name.
        vm: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Virtual CPUs.
        #[arg(long)]
        cpu: Option<u32>,
        /// Memory in MiB.
        #[arg(long)]
        memory: Option<u64>,
        /// Replaces the VM's cloud-init settings as a whole.
        #[command(flatten)]
        cloud_init: CloudInitArgs,
    },
    /// Puts an image's ISO in the VM's CD-ROM (live on a running VM).
    Iso {
        #[command(flatten)]
        target: VmTarget,
        /// The image whose ISO goes in.
        image: String,
    },
    /// Takes the ISO out of the VM's CD-ROM.
    Eject(VmTarget),
    /// Shows one VM.
    Get {
        /// The VM's id or name.
        vm: String,
    },
    /// Boots a stopped VM.
    Start(VmTarget),
    /// Shuts a VM down: ACPI powerdown, then forced after the timeout.
    Stop {
        #[command(flatten)]
        target: VmTarget,
        /// Pull the plug at once.
        #[arg(long)]
        force: bool,
        /// Seconds to wait for a graceful shutdown before forcing it.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Reboots a running VM.
    Restart(VmTarget),
    /// Pauses a running VM.
    Pause(VmTarget),
    /// Resumes a paused VM.
    Resume(VmTarget),
    /// Hard-resets a running VM.
    Reset(VmTarget),
    /// Deletes a stopped VM and its disk.
    Delete(VmTarget),
    /// Attaches this terminal to a running VM's serial console (Ctrl-] ends it; from a pipe,
    /// types stdin and ends once the guest is quiet after it).
    Console {
        /// The VM's id or name.
        vm: String,
    },
    /// Serves a running VM's graphical console to a VNC viewer on a local port, carried over
    /// the API with your token; prints the address. Ctrl-C ends it.
    Vnc {
        /// The VM's id or name.
        vm: String,
        /// Where to listen (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// End when the first viewer leaves.
        #[arg(long)]
        once: bool,
    },
    /// A VM's disk snapshots: list, take, restore, delete.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

/// A VM's cloud-init settings (the `cloudInit` object of `POST /vms` and `PATCH /vms/{id}`), from
/// a file, flags, or both; used at the VM's next start.
#[derive(Args, Debug, Default)]
pub struct CloudInitArgs {
    /// A JSON file holding the `cloudInit` object as the API takes it; the flags below add to it.
    #[arg(long, value_name = "FILE")]
    pub cloud_init: Option<std::path::PathBuf>,
    /// The guest's hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// A user-data file (e.g. `#cloud-config`), passed to the guest as it is.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<std::path::PathBuf>,
    /// A guest user to create (with the keys of --ssh-key).
    #[arg(long, requires = "ssh_keys")]
    pub user: Option<String>,
    /// A file of public SSH keys, one per line, for --user (may be repeated).
    #[arg(long = "ssh-key", value_name = "FILE", requires = "user")]
    pub ssh_keys: Vec<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Lists a VM's snapshots, oldest first.
    List {
        /// The VM's id or name.
        vm: String,
    },
    /// Takes a snapshot (live on a running VM; with --memory, its running state too).
    Take {
        #[command(flatten)]
        target: VmTarget,
        /// The snapshot's name.
        name: String,
        /// What it is for, shown in the list.
        #[arg(long)]
        description: Option<String>,
        /// Also keep the running VM's memory, to come back to it without a reboot.
        #[arg(long)]
        memory: bool,
    },
    /// Puts the VM back as the snapshot left it.
    Restore {
        #[command(flatten)]
        target: VmTarget,
        /// The snapshot's name.
        name: String,
    },
    /// Deletes a snapshot from the VM's disk.
    Delete {
        #[command(flatten)]
        target: VmTarget,
        /// The snapshot's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// Lists jobs, newest first.
    List {
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only this VM's jobs (id).
        #[arg(long)]
        vm: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Shows one job.
    Get { id: String },
    /// Follows a job until it ends (exit status 6 unless it succeeds).
    Wait {
        id: String,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        timeout: u64,
    },
    /// Cancels a queued job.
    Cancel { id: String },
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this VM's events (id).
    #[arg(long)]
    pub vm: Option<String>,
    /// Only events of these types, comma-separated (e.g. VmStarted,VmStopped).
    #[arg(long = "type", value_name = "TYPES")]
    pub event_type: Option<String>,
    /// Only events after this global position.
    #[arg(long, value_name = "POSITION")]
    pub after: Option<i64>,
    /// At most this many events (with --follow: stop after this many).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Keep streaming new events over the WebSocket feed, resuming after disconnects.
    #[arg(long, short)]
    pub follow: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The least severe level to show: info, warn or error.
    #[arg(long)]
    pub level: Option<String>,
    /// Recorded at or after this RFC 3339 time.
    #[arg(long)]
    pub from: Option<String>,
    /// Recorded before this RFC 3339 time.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long, default_value_t = 1)]
    pub page: u32,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Lists users.
    List {
        #[arg(long)]
        role: Option<String>,
    },
    /// Shows one user.
    Get { id: String },
    /// Creates a user; the password is asked for (or read from stdin with --password-stdin).
    Create {
        #[arg(long)]
        username: String,
        /// A role id: admin, user, viewer or one an admin added.
        #[arg(long, default_value = "user")]
        role: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Deletes a user.
    Delete {
        id: String,
        /// Give the user's VMs to this user instead.
        #[arg(long, value_name = "USER_ID")]
        transfer_to: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WebhooksCommand {
    /// Lists webhooks.
    List,
    /// Shows one webhook and how its deliveries stand.
    Get { id: String },
    /// Adds a webhook; its secret is printed once (to stderr; in the JSON with --json).
    Create {
        /// Where deliveries are POSTed (http or https); `--url` is the VoidVM server's.
        #[arg(value_name = "URL")]
        target: String,
        /// A VM event type to deliver (repeat it), or `*` for every one.
        #[arg(long = "event", value_name = "TYPE", default_value = "*")]
        events: Vec<String>,
        /// The signing secret (16 to 256 characters); the server makes one when absent.
        #[arg(long)]
        secret: Option<String>,
        /// Add it paused.
        #[arg(long)]
        inactive: bool,
    },
    /// Stops deliveries (events meanwhile are not kept for later).
    Pause { id: String },
    /// Starts deliveries again, from the events committed from now on.
    Resume { id: String },
    /// Deletes a webhook and its deliveries.
    Delete { id: String },
    /// Lists a webhook's deliveries, newest first.
    Deliveries {
        id: String,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
    },
    /// Sends a delivered or failed delivery again (its own id, a fresh set of attempts).
    Redeliver {
        id: String,
        /// The delivery's id (`webhooks deliveries` lists them).
        delivery: u64,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("voidvm").chain(args.iter().copied()))
    }

    #[test]
    fn a_webhook_target_is_not_taken_for_the_server_url() {
        let cli = parse(&[
            "--url",
            "http://voidvm:3000",
            "webhooks",
            "create",
            "https://hooks.example.com/x",
            "--event",
            "VmStarted",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("http://voidvm:3000"));
        match cli.command {
            ClientCommand::Webhooks(WebhooksCommand::Create { target, events, .. }) => {
                assert_eq!(target, "https://hooks.example.com/x");
                assert_eq!(events, ["VmStarted"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stop_takes_force_timeout_and_wait() {
        let cli = parse(&[
            "vm",
            "stop",
            "web",
            "--force",
            "--timeout",
            "5",
            "--wait",
            "--json",
        ])
        .unwrap();
        assert!(cli.global.json);
        let ClientCommand::Vm(VmCommand::Stop {
            target,
            force,
            timeout,
        }) = cli.command
        else {
            panic!("not a stop: {:?}", cli.command);
        };
        assert_eq!(target.vm, "web");
        assert!(force && target.wait.wait);
        assert_eq!(timeout, Some(5));
        assert_eq!(target.wait.wait_timeout, 600);
    }

    #[test]
    fn create_has_defaults_and_global_flags_go_anywhere() {
        let cli = parse(&[
            "--url",
            "http://h:1",
            "vm",
            "create",
            "--name",
            "a",
            "--os",
            "busybox",
            "--token",
            "t",
        ])
        .unwrap();
        assert_eq!(cli.global.url.as_deref(), Some("http://h:1"));
        assert_eq!(cli.global.token.as_deref(), Some("t"));
        let ClientCommand::Vm(VmCommand::Create {
            name,
            cpu,
            memory,
            disk,
            os,
            wait,
            ..
        }) = cli.command
        else {
            panic!("not a create");
        };
        assert_eq!((name.as_str(), cpu, memory, disk), ("a", 1, 512, 10));
        assert_eq!(os.as_deref(), Some("busybox"));
        assert!(!wait.wait);
    }

    #[test]
    fn events_and_jobs_parse() {
        let cli = parse(&[
            "events",
            "--vm",
            "vm-1",
            "--type",
            "VmStarted",
            "--after",
            "7",
            "-f",
        ])
        .unwrap();
        let ClientCommand::Events(e) = cli.command else {
            panic!("not events");
        };
        assert_eq!(
            (e.vm.as_deref(), e.event_type.as_deref(), e.after, e.follow),
            (Some("vm-1"), Some("VmStarted"), Some(7), true)
        );
        assert!(matches!(
            parse(&["jobs"]).unwrap().command,
            ClientCommand::Jobs { command: None }
        ));
        assert!(matches!(
            parse(&["jobs", "wait", "job-1", "--timeout", "3"])
                .unwrap()
                .command,
            ClientCommand::Jobs {
                command: Some(JobsCommand::Wait { timeout: 3, .. })
            }
        ));
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for args in [
            &["vm", "start"][..],
            &["vm", "stop", "x", "--timeout", "soon"],
            &["vm", "fly", "x"],
            &["events", "--after", "x"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }
}
