//! The `voidvm` command: `voidvm serve [--config FILE]`, `voidvm openapi`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use voidvm::config::Settings;
use voidvm::startup::Application;

#[derive(Parser)]
#[command(
    name = "voidvm",
    version,
    about = "An event-sourced control plane for QEMU virtual machines"
)]
struct Cli {
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
