//! `voidvm vm ...`: list, create, show, change and drive VMs (and their CD-ROM), optionally
//! following the job (`--wait`).
//!
//! The API has no name filter on `GET /vms`, so a VM given by name is found by listing every VM
//! the caller can see; a value starting with `vm-` is taken as an id without a lookup.

use std::time::Duration;

use serde_json::{json, Value};

use super::args::{VmCommand, VmTarget, WaitArgs};
use super::client::{CliError, CliResult, Client};
use super::jobs::{follow, items, seg};
use super::output::{Column, Output};

const LIST_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("STATUS", "/status"),
    ("CPU", "/cpu"),
    ("MEMORY(MiB)", "/memory"),
    ("DISK(GiB)", "/disk"),
    ("OS", "/os"),
    ("OWNER", "/owner"),
];

const DETAIL_COLUMNS: &[Column] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("DESCRIPTION", "/description"),
    ("STATUS", "/status"),
    ("REASON", "/statusReason"),
    ("CPU", "/cpu"),
    ("MEMORY(MiB)", "/memory"),
    ("DISK(GiB)", "/disk"),
    ("OS", "/os"),
    ("OWNER", "/owner"),
    ("ISO", "/iso"),
    ("PENDING JOB", "/pendingJobId"),
    ("PID", "/pid"),
    ("ACCEL", "/accel"),
    ("CREATED", "/createdAt"),
    ("UPDATED", "/updatedAt"),
    ("VERSION", "/version"),
];

const ACCEPTED_COLUMNS: &[Column] = &[("VM", "/vmId"), ("JOB", "/jobId"), ("STATUS", "/status")];

/// The largest page `GET /vms` gives.
const PAGE: u32 = 100;

pub async fn run(client: &Client, out: Output, command: VmCommand) -> CliResult<()> {
    match command {
        VmCommand::List { status } => {
            let vms = list(client, status.as_deref()).await?;
            out.list(&Value::Array(vms.clone()), &vms, LIST_COLUMNS)
        }
        VmCommand::Get { vm } => {
            let id = resolve(client, &vm).await?;
            out.object(&get(client, &id).await?, DETAIL_COLUMNS)
        }
        VmCommand::Create {
            name,
            cpu,
            memory,
            disk,
            os,
            description,
            cloud_init,
            wait,
        } => {
            let mut body = json!({"name": name, "cpu": cpu, "memory": memory, "disk": disk});
            if let Some(os) = os {
                body["os"] = json!(os);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(c) = super::cloud_init::body(&cloud_init)? {
                body["cloudInit"] = c;
            }
            let created = client.post("/vms", Some(body)).await?;
            let id = text(&created, "id")?;
            if !wait.wait {
                eprintln!(
                    "Creating VM {id} (job {}).",
                    created["jobId"].as_str().unwrap_or("?")
                );
                return out.object(&created, DETAIL_COLUMNS);
            }
            follow(client, &text(&created, "jobId")?, timeout(wait)).await?;
            out.object(&get(client, &id).await?, DETAIL_COLUMNS)
        }
        VmCommand::Update {
            vm,
            name,
            description,
            cpu,
            memory,
            cloud_init,
        } => {
            let mut body = serde_json::Map::new();
            let fields = [
                ("name", name.map(Value::from)),
                ("description", description.map(Value::from)),
                ("cpu", cpu.map(Value::from)),
                ("memory", memory.map(Value::from)),
                ("cloudInit", super::cloud_init::body(&cloud_init)?),
            ];
            for (key, value) in fields {
                if let Some(value) = value {
                    body.insert(key.to_string(), value);
                }
            }
            if body.is_empty() {
                return Err(CliError::Usage(
                    "nothing to change: give --name, --description, --cpu, --memory or cloud-init flags"
                        .to_string(),
                ));
            }
            let id = resolve(client, &vm).await?;
            let changed = client
                .patch(&format!("/vms/{}", seg(&id)), Value::Object(body))
                .await?;
            if changed["requiresRestart"] == true {
                eprintln!("The change applies when VM {id} next starts.");
            }
            if out.json {
                return out.json(&changed);
            }
            out.object(&changed["vm"], DETAIL_COLUMNS)
        }
        VmCommand::Iso { target, image } => {
            let body = json!({ "image": image });
            media(client, out, target, Some(body)).await
        }
        VmCommand::Eject(target) => media(client, out, target, None).await,
        VmCommand::Start(t) => act(client, out, "start", t, None).await,
        VmCommand::Stop {
            target,
            force,
            timeout,
        } => {
            let mut body = json!({"force": force});
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            act(client, out, "stop", target, Some(body)).await
        }
        VmCommand::Restart(t) => act(client, out, "restart", t, None).await,
        VmCommand::Pause(t) => act(client, out, "pause", t, None).await,
        VmCommand::Resume(t) => act(client, out, "resume", t, None).await,
        VmCommand::Reset(t) => act(client, out, "reset", t, None).await,
        VmCommand::Console { vm } => super::console::run(client, &vm).await,
        VmCommand::Vnc { vm, listen, once } => super::vnc::run(client, &vm, listen, once).await,
        VmCommand::Snapshot(c) => super::snapshots::run(client, out, c).await,
        VmCommand::Delete(t) => {
            let id = resolve(client, &t.vm).await?;
            let accepted = client.delete(&format!("/vms/{}", seg(&id)), &[]).await?;
            if !t.wait.wait {
                return out.object(&accepted, ACCEPTED_COLUMNS);
            }
            let job = follow(client, &text(&accepted, "jobId")?, timeout(t.wait)).await?;
            out.done(&job, &format!("Deleted VM {id}."))
        }
    }
}

fn timeout(wait: WaitArgs) -> Duration {
    Duration::from_secs(wait.wait_timeout)
}

/// A lifecycle verb; with `--wait`, the VM as it is once the job succeeded.
async fn act(
    client: &Client,
    out: Output,
    verb: &str,
    target: VmTarget,
    body: Option<Value>,
) -> CliResult<()> {
    let id = resolve(client, &target.vm).await?;
    let accepted = client
        .post(&format!("/vms/{}/{verb}", seg(&id)), body)
        .await?;
    if !target.wait.wait {
        return out.object(&accepted, ACCEPTED_COLUMNS);
    }
    follow(client, &text(&accepted, "jobId")?, timeout(target.wait)).await?;
    out.object(&get(client, &id).await?, DETAIL_COLUMNS)
}

/// Puts an ISO in the VM's CD-ROM (`Some` body) or takes it out; with `--wait`, the VM once
/// the media job succeeded.
async fn media(
    client: &Client,
    out: Output,
    target: VmTarget,
    body: Option<Value>,
) -> CliResult<()> {
    let id = resolve(client, &target.vm).await?;
    let path = format!("/vms/{}/iso", seg(&id));
    let accepted = match body {
        Some(body) => client.post(&path, Some(body)).await?,
        None => client.delete(&path, &[]).await?,
    };
    if !target.wait.wait {
        return out.object(&accepted, ACCEPTED_COLUMNS);
    }
    follow(client, &text(&accepted, "jobId")?, timeout(target.wait)).await?;
    out.object(&get(client, &id).await?, DETAIL_COLUMNS)
}

async fn get(client: &Client, id: &str) -> CliResult<Value> {
    client.get(&format!("/vms/{}", seg(id)), &[]).await
}

/// Every VM the caller can see, page by page.
async fn list(client: &Client, status: Option<&str>) -> CliResult<Vec<Value>> {
    let mut all = Vec::new();
    for page in 1.. {
        let mut query = vec![("page", page.to_string()), ("limit", PAGE.to_string())];
        query.extend(status.map(|s| ("status", s.to_string())));
        let data = client.get("/vms", &query).await?;
        all.extend(items(&data).iter().cloned());
        let pages = data["pagination"]["totalPages"].as_i64().unwrap_or(0);
        if i64::from(page) >= pages || items(&data).is_empty() {
            break;
        }
    }
    Ok(all)
}

/// The VM id `given` names: itself if it looks like an id, else the one VM with that name.
pub async fn resolve(client: &Client, given: &str) -> CliResult<String> {
    if given.starts_with("vm-") {
        return Ok(given.to_string());
    }
    let vms = list(client, None).await?;
    pick_by_name(&vms, given)
}

fn pick_by_name(vms: &[Value], name: &str) -> CliResult<String> {
    let ids: Vec<&str> = vms
        .iter()
        .filter(|vm| vm["name"].as_str() == Some(name))
        .filter_map(|vm| vm["id"].as_str())
        .collect();
    match ids.as_slice() {
        [id] => Ok(id.to_string()),
        [] => Err(CliError::Api {
            status: 404,
            code: "VM_NOT_FOUND".into(),
            message: format!("No VM named '{name}'"),
            details: Some("Give the VM's id, or a name from `voidvm vm list`.".into()),
        }),
        several => Err(CliError::Usage(format!(
            "{} VMs are named '{name}' ({}); give an id",
            several.len(),
            several.join(", ")
        ))),
    }
}

fn text(data: &Value, key: &str) -> CliResult<String> {
    data[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CliError::BadAnswer(format!("no `{key}` in {data}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_picks_its_one_vm() {
        let vms = vec![
            json!({"id": "vm-a", "name": "web"}),
            json!({"id": "vm-b", "name": "db"}),
            json!({"id": "vm-c", "name": "db"}),
        ];
        assert_eq!(pick_by_name(&vms, "web").unwrap(), "vm-a");
        assert_eq!(pick_by_name(&vms, "nope").unwrap_err().exit_code(), 4);
        assert_eq!(pick_by_name(&vms, "db").unwrap_err().exit_code(), 2);
    }
}
