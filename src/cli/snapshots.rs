//! `voidvm vm snapshot ...`: a VM's disk snapshots (list, take, restore, delete), each change
//! carried out as a job that `--wait` follows.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::{SnapshotCommand, VmTarget};
use super::client::{CliError, CliResult, Client};
use super::jobs::{follow, seg};
use super::output::{Column, Output};
use super::vm::resolve;

const COLUMNS: &[Column] = &[
    ("NAME", "/name"),
    ("MEMORY", "/memory"),
    ("DESCRIPTION", "/description"),
    ("VM STATUS", "/vmStatus"),
    ("CREATED", "/createdAt"),
];

const ACCEPTED_COLUMNS: &[Column] = &[("VM", "/vmId"), ("JOB", "/jobId"), ("STATUS", "/status")];

pub async fn run(client: &Client, out: Output, command: SnapshotCommand) -> CliResult<()> {
    match command {
        SnapshotCommand::List { vm } => {
            let id = resolve(client, &vm).await?;
            let data = client
                .get(&format!("/vms/{}/snapshots", seg(&id)), &[])
                .await?;
            let list = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
            out.list(&data, list, COLUMNS)
        }
        SnapshotCommand::Take {
            target,
            name,
            description,
            memory,
        } => {
            let mut body = json!({"name": name, "memory": memory});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            change(client, out, target, |id| {
                (
                    reqwest::Method::POST,
                    format!("/vms/{}/snapshots", seg(id)),
                    Some(body),
                )
            })
            .await
        }
        SnapshotCommand::Restore { target, name } => {
            change(client, out, target, |id| {
                let path = format!("/vms/{}/snapshots/{}/restore", seg(id), seg(&name));
                (reqwest::Method::POST, path, None)
            })
            .await
        }
        SnapshotCommand::Delete { target, name } => {
            change(client, out, target, |id| {
                let path = format!("/vms/{}/snapshots/{}", seg(id), seg(&name));
                (reqwest::Method::DELETE, path, None)
            })
            .await
        }
    }
}

/// Sends the request `what` makes for the VM's id, then follows its job with `--wait` and
/// shows the VM's snapshots.
async fn change(
    client: &Client,
    out: Output,
    target: VmTarget,
    what: impl FnOnce(&str) -> (reqwest::Method, String, Option<Value>),
) -> CliResult<()> {
    let id = resolve(client, &target.vm).await?;
    let (method, path, body) = what(&id);
    let accepted = client
        .send(method, &path, &[], body, Duration::from_secs(60))
        .await?;
    if !target.wait.wait {
        return out.object(&accepted, ACCEPTED_COLUMNS);
    }
    let job = accepted["jobId"]
        .as_str()
        .ok_or_else(|| CliError::BadAnswer(format!("no jobId in {accepted}")))?;
    follow(client, job, Duration::from_secs(target.wait.wait_timeout)).await?;
    let data = client
        .get(&format!("/vms/{}/snapshots", seg(&id)), &[])
        .await?;
    let list = data.as_array().map(Vec::as_slice).unwrap_or(&[]);
    out.list(&data, list, COLUMNS)
}
