//! The `voidvm` command: `voidvm serve [--config FILE]`, `voidvm openapi`,
//! `voidvm stream status|reset [--config FILE]`, and the client commands (`login`, `vm`, `jobs`,
//! `events`, ...) that live in `voidvm::cli`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voidvm::cli::args::{ClientCommand, GlobalArgs, EXIT_CODES_HELP};
use voidvm::config::Settings;
use voidvm::startup::Application;

/// mimalloc instead of glibc's allocator: a command's JSON (the request, its events, the VM's
/// state, the answer) is many short-lived allocations, and glibc's malloc took a quarter of the
/// server's CPU under `benches/command_load.rs` (its free lists, consolidating chunks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "voidvm",
    version,
    about = "An event-sourced control plane for QEMU virtual machines",
    after_help = EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the API server.
    Serve {
        /// A TOML settings file; `VOIDVM_*` variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Prints the OpenAPI document (the one served at `/api/v1/openapi.json`).
    Openapi,
    /// The NATS stream the event log is relayed to.
    Stream {
        #[command(subcommand)]
        action: StreamAction,
        /// A TOML settings file; `VOIDVM_*` variables override it.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(Box<ClientCommand>),
}

#[derive(Subcommand)]
enum StreamAction {
    /// Says whether the stream carries this database's event log (exit status 1 if not).
    Status,
    /// Deletes the stream if it carries another log or is ahead of this one (a restored
    /// database); the relay then republishes this log from its first position into a new stream.
    Reset,
}

#[actix_web::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Openapi => {
            println!("{}", voidvm::api::openapi::document());
            ExitCode::SUCCESS
        }
        Command::Stream { action, config } => stream(action, config).await,
        Command::Client(command) => voidvm::cli::run(cli.global, *command).await,
    }
}

async fn stream(action: StreamAction, config: Option<PathBuf>) -> ExitCode {
    use voidvm::bus::ownership::{CheckError, Reset, StreamOwner};
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voidvm: {e}");
            return ExitCode::from(2);
        }
    };
    let owner = match StreamOwner::connect(&settings).await {
        Ok(owner) => owner,
        Err(e) => {
            eprintln!("voidvm: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let stream = &settings.nats.stream;
    match action {
        StreamAction::Status => match owner.check().await {
            Ok(_) => {
                println!("NATS stream {stream} carries this database's event log.");
                ExitCode::SUCCESS
            }
            Err(CheckError::Conflict(conflict)) => {
                println!("{conflict}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("voidvm: {}", voidvm::telemetry::chain(&e));
                ExitCode::FAILURE
            }
        },
        StreamAction::Reset => match owner.reset().await {
            Ok(Reset::NothingToDo) => {
                println!("NATS stream {stream} carries this database's event log; nothing to do.");
                ExitCode::SUCCESS
            }
            Ok(Reset::Deleted(conflict)) => {
                println!("{conflict}");
                println!("Deleted NATS stream {stream}; the relay republishes this database's event log from its first position.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("voidvm: {}", voidvm::telemetry::chain(&e));
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("voidvm: {e}");
            return ExitCode::from(2);
        }
    };
    voidvm::telemetry::init_as(settings.log_format);
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("voidvm: start-up failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    // Tests and scripts read this line to find the port.
    println!("VoidVM listening on http://{}", app.addr());
    match app.run_until_stopped().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voidvm: {e:#}");
            ExitCode::FAILURE
        }
    }
}
