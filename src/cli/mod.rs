//! The `voidvm` client commands: the REST API and the feed for people at a terminal and for
//! scripts.
//!
//! [`run`] resolves the server and token (flags and `VOIDVM_URL`/`VOIDVM_TOKEN` over the
//! credentials file), runs one command and turns its outcome into an exit status through
//! [`client::CliError::exit_code`]. Each concern has its own file: the command line (`args`),
//! the stored login (`credentials`), HTTP and errors (`client`), printing (`output`), and one
//! file per command group.

pub mod args;
pub mod auth;
pub mod client;
pub mod cloud_init;
pub mod config;
pub mod console;
pub mod credentials;
pub mod events;
pub mod images;
pub mod jobs;
pub mod output;
pub mod roles;
pub mod snapshots;
pub mod users;
pub mod vm;
pub mod vnc;
pub mod webhooks;

use std::process::ExitCode;

use args::{ClientCommand, GlobalArgs};
use client::{CliResult, Client};
use credentials::ProcessEnv;
use output::Output;

/// Runs one client command; errors go to stderr as `voidvm: CODE: message` (and details).
pub async fn run(global: GlobalArgs, command: ClientCommand) -> ExitCode {
    match dispatch(global, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(client::CliError::StdoutClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn dispatch(global: GlobalArgs, command: ClientCommand) -> CliResult<()> {
    let env = ProcessEnv;
    let out = Output { json: global.json };
    // A damaged credentials file must not stop `login` or `logout`, which replace or delete it.
    let stored = match (credentials::load(&env), &command) {
        (Ok(stored), _) => stored,
        (Err(_), ClientCommand::Login(_) | ClientCommand::Logout) => None,
        (Err(e), _) => return Err(e),
    };
    let (url, token) = credentials::resolve(
        global.url.as_deref(),
        global.token.as_deref(),
        stored.as_ref(),
    );
    if let ClientCommand::Login(login) = command {
        return auth::login(&env, &url, out, login).await;
    }
    let client = Client::new(&url, token)?;
    if let ClientCommand::Logout = command {
        return auth::logout(&env, &client, out).await;
    }
    client.require_token()?;
    match command {
        ClientCommand::Login(_) | ClientCommand::Logout => Ok(()),
        ClientCommand::Vm(c) => vm::run(&client, out, c).await,
        ClientCommand::Jobs { command } => jobs::run(&client, out, command).await,
        ClientCommand::Events(a) => events::run(&client, out, a).await,
        ClientCommand::Logs(a) => events::logs(&client, out, a).await,
        ClientCommand::Users(c) => users::run(&client, out, c).await,
        ClientCommand::Webhooks(c) => webhooks::run(&client, out, c).await,
        ClientCommand::Images(c) => images::run(&client, out, c).await,
        ClientCommand::Roles(c) => roles::run(&client, out, c).await,
        ClientCommand::Config(c) => config::run(&client, out, c).await,
    }
}
