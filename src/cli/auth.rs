//! `voidvm login` and `voidvm logout`, and reading a secret from the terminal or stdin.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use serde_json::json;

use super::args::LoginArgs;
use super::client::{CliError, CliResult, Client};
use super::credentials::{self, Credentials, Environment};
use super::output::Output;

/// Logs in at `url` and stores the token.
pub async fn login(
    env: &impl Environment,
    url: &str,
    out: Output,
    args: LoginArgs,
) -> CliResult<()> {
    let username = match args.username {
        Some(u) => u,
        None if std::io::stdin().is_terminal() => prompt_line("Username: ")?,
        None => {
            return Err(CliError::Usage(
                "--username is required when stdin is not a terminal".into(),
            ))
        }
    };
    let password = read_secret(args.password_stdin, "Password: ")?;
    let client = Client::new(url, None)?;
    let session = client
        .post(
            "/auth/login",
            Some(json!({"username": username, "password": password})),
        )
        .await?;
    let token = session["token"]
        .as_str()
        .context("the login answer has no token")?
        .to_string();
    let path = credentials::save(
        env,
        &Credentials {
            url: client.origin().to_string(),
            token,
            username: Some(username.clone()),
        },
    )?;
    // The token itself is never printed, not even with --json.
    let summary = json!({"url": client.origin(), "username": username, "expiresAt": session["expiresAt"], "credentials": path});
    out.done(
        &summary,
        &format!(
            "Logged in to {} as {username}; credentials in {}.",
            client.origin(),
            path.display()
        ),
    )
}

/// Revokes the token (if the server can be told) and deletes the credentials file.
pub async fn logout(env: &impl Environment, client: &Client, out: Output) -> CliResult<()> {
    if client.token().is_some() {
        if let Err(e) = client.post("/auth/logout", None).await {
            eprintln!("voidvm: the server was not told ({e}); forgetting the token anyway");
        }
    }
    let removed = credentials::remove(env)?;
    let sentence = if removed {
        "Logged out."
    } else {
        "Not logged in."
    };
    out.done(&json!({"removed": removed}), sentence)
}

/// A secret: the first line of stdin with `from_stdin` or when stdin is no terminal, else asked
/// for without echo.
pub fn read_secret(from_stdin: bool, prompt: &str) -> CliResult<String> {
    let secret = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        rpassword::prompt_password(prompt).context("reading the password from the terminal")?
    };
    if secret.is_empty() {
        return Err(CliError::Usage("the password is empty".into()));
    }
    Ok(secret)
}

fn prompt_line(prompt: &str) -> CliResult<String> {
    eprint!("{prompt}");
    std::io::stderr().flush().context("writing the prompt")?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the username")?;
    Ok(line.trim().to_string())
}
