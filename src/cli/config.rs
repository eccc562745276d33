//! `voidvm config ...`: the settings an admin may change while the server runs (`PUT /config`),
//! shown by section, and changed as `section.field=value` pairs.

use clap::Subcommand;
use serde_json::{Map, Value};

use super::client::{CliError, CliResult, Client};
use super::output::{line, Output};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Shows the configuration by section, and which fields only a restart changes.
    Get,
    /// Changes fields, e.g. `limits.requestsPerMinute=600 system.maxVmsPerUser=10`; a value is
    /// read as JSON when it is (numbers, true, false, null, lists), else as text.
    Set {
        #[arg(value_name = "SECTION.FIELD=VALUE", required = true)]
        changes: Vec<String>,
    },
}

pub async fn run(client: &Client, out: Output, command: ConfigCommand) -> CliResult<()> {
    let data = match command {
        ConfigCommand::Get => client.get("/config", &[]).await?,
        ConfigCommand::Set { changes } => {
            let body = change_body(&changes)?;
            client.put("/config", body).await?
        }
    };
    if out.json {
        return out.json(&data);
    }
    for (section, fields) in data.as_object().into_iter().flatten() {
        let Some(fields) = fields.as_object() else {
            continue;
        };
        for (field, value) in fields {
            line(&format!("{section}.{field} = {value}"))?;
        }
    }
    if let Some(restart) = data["restartRequired"].as_array().filter(|r| !r.is_empty()) {
        let names: Vec<&str> = restart.iter().filter_map(Value::as_str).collect();
        line(&format!("only a restart changes: {}", names.join(", ")))?;
    }
    Ok(())
}

/// `section.field=value` pairs as the nested body `PUT /config` takes.
fn change_body(changes: &[String]) -> CliResult<Value> {
    let mut body = Map::new();
    for change in changes {
        let usage = || {
            CliError::Usage(format!(
                "'{change}' is not SECTION.FIELD=VALUE (e.g. limits.requestsPerMinute=600)"
            ))
        };
        let (key, raw) = change.split_once('=').ok_or_else(usage)?;
        let (section, field) = key.split_once('.').ok_or_else(usage)?;
        if section.is_empty() || field.is_empty() {
            return Err(usage());
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::from(raw));
        let entry = body
            .entry(section.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = entry {
            fields.insert(field.to_string(), value);
        }
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_become_sections_and_values_are_json_when_they_can_be() {
        let body = change_body(&[
            "limits.requestsPerMinute=600".into(),
            "limits.loginFailures=5".into(),
            "network.vmBridges=[\"br0\"]".into(),
            "system.note=plain text".into(),
        ])
        .expect("a body");
        assert_eq!(
            body,
            json!({
                "limits": {"requestsPerMinute": 600, "loginFailures": 5},
                "network": {"vmBridges": ["br0"]},
                "system": {"note": "plain text"}
            })
        );
    }

    #[test]
    fn a_pair_without_a_section_or_a_value_is_a_usage_error() {
        for bad in [
            "requestsPerMinute=600",
            "limits.requestsPerMinute",
            ".x=1",
            "limits.=1",
        ] {
            assert!(
                matches!(change_body(&[bad.into()]), Err(CliError::Usage(_))),
                "{bad}"
            );
        }
    }
}
