//! `voidvm users ...`: the accounts an admin manages (list, show, create, delete).

use serde_json::json;

use super::args::UsersCommand;
use super::auth::read_secret;
use super::client::CliResult;
use super::client::Client;
use super::jobs::{items, seg};
use super::output::{Column, Output};

const USER_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("USERNAME", "/username"),
    ("ROLE", "/role"),
    ("STATUS", "/status"),
    ("EMAIL", "/email"),
    ("CREATED", "/createdAt"),
];

pub async fn run(client: &Client, out: Output, command: UsersCommand) -> CliResult<()> {
    match command {
        UsersCommand::List { role } => {
            let mut query = vec![("limit", "100".to_string())];
            query.extend(role.map(|r| ("role", r)));
            let data = client.get("/users", &query).await?;
            out.list(&data, items(&data), USER_COLUMNS)
        }
        UsersCommand::Get { id } => {
            let data = client.get(&format!("/users/{}", seg(&id)), &[]).await?;
            out.object(&data, USER_COLUMNS)
        }
        UsersCommand::Create {
            username,
            role,
            email,
            password_stdin,
        } => {
            let password = read_secret(password_stdin, &format!("Password for {username}: "))?;
            let mut body = json!({"username": username, "password": password, "role": role});
            if let Some(email) = email {
                body["email"] = json!(email);
            }
            let data = client.post("/users", Some(body)).await?;
            out.object(&data, USER_COLUMNS)
        }
        UsersCommand::Delete { id, transfer_to } => {
            let query: Vec<_> = transfer_to.map(|t| ("transferTo", t)).into_iter().collect();
            let data = client
                .delete(&format!("/users/{}", seg(&id)), &query)
                .await?;
            out.done(&data, &format!("Deleted user {id}."))
        }
    }
}
