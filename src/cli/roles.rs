//! `voidvm roles ...`: the roles an admin defines (list, show, add, change, delete) and the
//! permission catalog they draw on. The command line lives here with the work, as a role is one
//! small body.

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{CliError, CliResult, Client};
use super::jobs::seg;
use super::output::{Column, Output};

#[derive(Subcommand, Debug)]
pub enum RolesCommand {
    /// Lists the roles, built-in and added.
    List,
    /// Shows one role.
    Get { id: String },
    /// Lists the permissions a role can grant.
    Permissions,
    /// Adds a role.
    Create {
        /// 2 to 32 lower-case letters, digits or `-`, starting with a letter.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// A permission id (repeat it; `voidvm roles permissions` lists them), or `*`.
        #[arg(long = "permission", value_name = "ID", required = true)]
        permissions: Vec<String>,
        /// `own` (the holder's own VMs; the default) or `all`.
        #[arg(long)]
        scope: Option<String>,
        /// Requests a minute for the role's users.
        #[arg(long)]
        rate_limit: Option<u32>,
    },
    /// Changes a role: only what is given changes (`--permission` replaces the whole list).
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long = "permission", value_name = "ID")]
        permissions: Vec<String>,
        #[arg(long)]
        scope: Option<String>,
        #[arg(long, conflicts_with = "default_rate_limit")]
        rate_limit: Option<u32>,
        /// Return the role's rate to the configured default.
        #[arg(long)]
        default_rate_limit: bool,
    },
    /// Deletes a role no user holds.
    Delete { id: String },
}

const ROLE_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("SCOPE", "/scope"),
    ("PERMISSIONS", "/permissions"),
    ("RATE", "/rateLimit"),
    ("BUILT-IN", "/builtIn"),
];

const PERMISSION_COLUMNS: &[Column] = &[("ID", "/id"), ("DESCRIPTION", "/description")];

pub async fn run(client: &Client, out: Output, command: RolesCommand) -> CliResult<()> {
    match command {
        RolesCommand::List => {
            let data = client.get("/roles", &[]).await?;
            out.list(&data, as_list(&data), ROLE_COLUMNS)
        }
        RolesCommand::Get { id } => {
            // The API lists roles; there is no read of one.
            let data = client.get("/roles", &[]).await?;
            let role = as_list(&data)
                .iter()
                .find(|r| r["id"] == id.as_str())
                .cloned()
                .ok_or_else(|| CliError::Api {
                    status: 404,
                    code: "ROLE_NOT_FOUND".into(),
                    message: format!("No role '{id}'."),
                    details: None,
                })?;
            out.object(&role, ROLE_COLUMNS)
        }
        RolesCommand::Permissions => {
            let data = client.get("/permissions", &[]).await?;
            out.list(&data, as_list(&data), PERMISSION_COLUMNS)
        }
        RolesCommand::Create {
            id,
            name,
            description,
            permissions,
            scope,
            rate_limit,
        } => {
            let mut body = json!({"id": id, "name": name, "permissions": permissions});
            set(&mut body, "description", description.map(Value::from));
            set(&mut body, "scope", scope.map(Value::from));
            set(&mut body, "rateLimit", rate_limit.map(Value::from));
            let data = client.post("/roles", Some(body)).await?;
            out.object(&data, ROLE_COLUMNS)
        }
        RolesCommand::Update {
            id,
            name,
            description,
            permissions,
            scope,
            rate_limit,
            default_rate_limit,
        } => {
            let mut body = json!({});
            set(&mut body, "name", name.map(Value::from));
            set(&mut body, "description", description.map(Value::from));
            if !permissions.is_empty() {
                body["permissions"] = json!(permissions);
            }
            set(&mut body, "scope", scope.map(Value::from));
            set(&mut body, "rateLimit", rate_limit.map(Value::from));
            if default_rate_limit {
                body["rateLimit"] = Value::Null;
            }
            let path = format!("/roles/{}", seg(&id));
            let data = client.put(&path, body).await?;
            out.object(&data, ROLE_COLUMNS)
        }
        RolesCommand::Delete { id } => {
            let data = client.delete(&format!("/roles/{}", seg(&id)), &[]).await?;
            out.done(&data, &format!("Deleted role {id}."))
        }
    }
}

fn as_list(data: &Value) -> &[Value] {
    data.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn set(body: &mut Value, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        body[key] = value;
    }
}
