//! `voidvm webhooks ...`: the HTTP receivers of one's VMs' events (list, show, add, pause or
//! resume, delete) and their deliveries.

use serde_json::json;

use super::args::WebhooksCommand;
use super::client::{CliResult, Client};
use super::jobs::{items, seg};
use super::output::{Column, Output};

const WEBHOOK_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("URL", "/url"),
    ("EVENTS", "/events"),
    ("ACTIVE", "/active"),
    ("PENDING", "/deliveries/pending"),
    ("DELIVERED", "/deliveries/delivered"),
    ("FAILED", "/deliveries/failed"),
];

const DELIVERY_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("POSITION", "/position"),
    ("VM", "/vmId"),
    ("TYPE", "/eventType"),
    ("STATUS", "/status"),
    ("ATTEMPTS", "/attempts"),
    ("HTTP", "/responseStatus"),
    ("ERROR", "/error"),
];

pub async fn run(client: &Client, out: Output, command: WebhooksCommand) -> CliResult<()> {
    match command {
        WebhooksCommand::List => {
            let data = client.get("/webhooks", &[]).await?;
            let list = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
            out.list(&data, list, WEBHOOK_COLUMNS)
        }
        WebhooksCommand::Get { id } => {
            let data = client.get(&format!("/webhooks/{}", seg(&id)), &[]).await?;
            out.object(&data, WEBHOOK_COLUMNS)
        }
        WebhooksCommand::Create {
            target,
            events,
            secret,
            inactive,
        } => {
            let mut body = json!({"url": target, "events": events, "active": !inactive});
            if let Some(secret) = secret {
                body["secret"] = json!(secret);
            }
            let data = client.post("/webhooks", Some(body)).await?;
            if !out.json {
                // Shown this once by the server: the receiver needs it to check signatures.
                eprintln!(
                    "Secret (shown once): {}",
                    data["secret"].as_str().unwrap_or("")
                );
            }
            out.object(&data, WEBHOOK_COLUMNS)
        }
        WebhooksCommand::Pause { id } => set_active(client, out, &id, false).await,
        WebhooksCommand::Resume { id } => set_active(client, out, &id, true).await,
        WebhooksCommand::Delete { id } => {
            let data = client
                .delete(&format!("/webhooks/{}", seg(&id)), &[])
                .await?;
            out.done(&data, &format!("Deleted webhook {id}."))
        }
        WebhooksCommand::Deliveries { id, status } => {
            let mut query = vec![("limit", "100".to_string())];
            query.extend(status.map(|s| ("status", s)));
            let data = client
                .get(&format!("/webhooks/{}/deliveries", seg(&id)), &query)
                .await?;
            out.list(&data, items(&data), DELIVERY_COLUMNS)
        }
        WebhooksCommand::Redeliver { id, delivery } => {
            let data = client
                .post(
                    &format!("/webhooks/{}/deliveries/{delivery}/redeliver", seg(&id)),
                    None,
                )
                .await?;
            out.object(&data, DELIVERY_COLUMNS)
        }
    }
}

/// Pauses (no deliveries, none kept for later) or resumes (events from now on) a webhook.
async fn set_active(client: &Client, out: Output, id: &str, active: bool) -> CliResult<()> {
    let data = client
        .patch(
            &format!("/webhooks/{}", seg(id)),
            json!({ "active": active }),
        )
        .await?;
    out.object(&data, WEBHOOK_COLUMNS)
}
