//! `voidvm images ...`: the images VMs are made from (list, show, import from a URL, upload a
//! file, delete). Adding and deleting are for administrators; the server says so otherwise.

use std::time::Duration;

use serde_json::json;

use super::args::{ImageWhat, ImagesCommand};
use super::client::{CliResult, Client};
use super::jobs::{follow, seg};
use super::output::{Column, Output};

const COLUMNS: &[Column] = &[
    ("NAME", "/name"),
    ("KIND", "/kind"),
    ("STATUS", "/status"),
    ("SOURCE", "/source"),
    ("FORMAT", "/format"),
    ("SIZE(B)", "/sizeBytes"),
    ("JOB", "/jobId"),
    ("ERROR", "/error"),
];

pub async fn run(client: &Client, out: Output, command: ImagesCommand) -> CliResult<()> {
    match command {
        ImagesCommand::List => {
            let data = client.get("/images", &[]).await?;
            let list = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
            out.list(&data, list, COLUMNS)
        }
        ImagesCommand::Get { name } => out.object(&image(client, &name).await?, COLUMNS),
        ImagesCommand::Import {
            name,
            from,
            what,
            wait,
        } => {
            let mut body = json!({"name": name, "url": from, "kind": what.kind});
            if let Some(format) = what.format {
                body["format"] = json!(format);
            }
            if let Some(sha256) = what.sha256 {
                body["sha256"] = json!(sha256);
            }
            let accepted = client.post("/images", Some(body)).await?;
            if !wait.wait {
                return out.object(&accepted, COLUMNS);
            }
            let job = accepted["job"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            follow(client, &job, Duration::from_secs(wait.wait_timeout)).await?;
            out.object(&image(client, &name).await?, COLUMNS)
        }
        ImagesCommand::Upload { name, file, what } => {
            let data = client
                .put_file(
                    &format!("/images/{}/upload", seg(&name)),
                    &upload_query(&what),
                    &file,
                )
                .await?;
            out.object(&data, COLUMNS)
        }
        ImagesCommand::Delete { name } => {
            let data = client
                .delete(&format!("/images/{}", seg(&name)), &[])
                .await?;
            out.done(&data, &format!("Deleted image {name}."))
        }
    }
}

async fn image(client: &Client, name: &str) -> CliResult<serde_json::Value> {
    client.get(&format!("/images/{}", seg(name)), &[]).await
}

fn upload_query(what: &ImageWhat) -> Vec<(&'static str, String)> {
    let mut query = vec![("kind", what.kind.clone())];
    query.extend(what.format.clone().map(|f| ("format", f)));
    query.extend(what.sha256.clone().map(|s| ("sha256", s)));
    query
}
