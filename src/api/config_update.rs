//! The body of `PUT /config`, for the OpenAPI document: which sections and fields there are, the
//! bounds of the live ones (`accounts::live::ConfigOverrides::invalid`) and that a field that
//! needs a restart is accepted only with the value in force. The handler reads the body as JSON
//! (`api::config::put`), so that it can name the first field it refuses; these types only
//! describe it, and a test keeps them and the handler in step.

use serde::Deserialize;

/// Sections with the fields to change. A live field takes a number, or `null` to return to the
/// server's setting; a field that needs a restart (`restartRequired`) may be sent only with the
/// value in force, so the sections of a `GET /config` can be put back with live fields changed.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub struct ConfigUpdate {
    system: Option<SystemUpdate>,
    limits: Option<LimitsUpdate>,
    network: Option<NetworkUpdate>,
    storage: Option<StorageUpdate>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub struct SystemUpdate {
    /// Live.
    #[schema(minimum = 0, maximum = 1_000_000)]
    max_vms_per_user: Option<Option<u64>>,
    /// Live.
    #[schema(minimum = 0, maximum = 1_000_000)]
    max_vcpus_per_user: Option<Option<u64>>,
    /// MiB. Live.
    #[schema(minimum = 0, maximum = 1_099_511_627_776_u64)]
    max_memory_per_user: Option<Option<u64>>,
    /// GiB. Live.
    #[schema(minimum = 0, maximum = 1_073_741_824)]
    max_disk_per_user: Option<Option<u64>>,
    /// Needs a restart: only the value in force.
    node_id: Option<String>,
    /// Needs a restart: only the value in force.
    workers: Option<u64>,
    /// Needs a restart: only the value in force.
    version: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub struct LimitsUpdate {
    /// Live.
    #[schema(minimum = 1, maximum = 100_000_000)]
    requests_per_minute: Option<Option<u32>>,
    /// Live.
    #[schema(minimum = 1, maximum = 1_000_000)]
    login_failures: Option<Option<u32>>,
    /// Live.
    #[schema(minimum = 1, maximum = 604_800)]
    login_lockout_seconds: Option<Option<u64>>,
    /// Needs a restart: only the value in force.
    ws_connections_per_user: Option<u64>,
    /// Needs a restart: only the value in force.
    vm_cpu_max: Option<u64>,
    /// Needs a restart: only the value in force.
    vm_memory_max_mib: Option<u64>,
    /// Needs a restart: only the value in force.
    vm_disk_max_gib: Option<u64>,
}

/// Every field needs a restart: only the values in force.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub struct NetworkUpdate {
    listen: Option<String>,
    nats_url: Option<String>,
    nats_stream: Option<String>,
    vm_port_range_start: Option<u16>,
    vm_port_range_end: Option<u16>,
    vm_bridges: Option<Vec<String>>,
}

/// Every field needs a restart: only the values in force.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[expect(dead_code, reason = "describes the body for the OpenAPI document only")]
pub struct StorageUpdate {
    data_dir: Option<String>,
    images_dir: Option<String>,
    snapshot_every: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::accounts::live::RESTART_REQUIRED;
    use crate::accounts::ConfigOverrides;

    fn document() -> Value {
        serde_json::from_str(crate::api::openapi::document()).expect("the document is JSON")
    }

    fn fields(doc: &Value, schema: &str) -> Vec<String> {
        let mut names: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema} has properties"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    const SECTIONS: [(&str, &str, &str); 4] = [
        ("system", "SystemSection", "SystemUpdate"),
        ("limits", "LimitsSection", "LimitsUpdate"),
        ("network", "NetworkSection", "NetworkUpdate"),
        ("storage", "StorageSection", "StorageUpdate"),
    ];

    #[test]
    fn the_body_names_every_field_get_shows_and_no_other() {
        let doc = document();
        let body = &doc["paths"]["/api/v1/config"]["put"]["requestBody"]["content"]
            ["application/json"]["schema"];
        assert_eq!(body["$ref"], "#/components/schemas/ConfigUpdate", "{body}");
        assert_eq!(
            doc["components"]["schemas"]["ConfigUpdate"]["additionalProperties"],
            false
        );
        for (_, shown, update) in SECTIONS {
            assert_eq!(fields(&doc, shown), fields(&doc, update), "{update}");
            assert_eq!(
                doc["components"]["schemas"][update]["additionalProperties"], false,
                "{update}"
            );
        }
    }

    /// A live field's bounds in the document are the ones the handler checks, and a field that
    /// needs a restart has none.
    #[test]
    fn the_live_fields_bounds_are_the_ones_the_handler_checks() {
        let doc = document();
        for (section, _, update) in SECTIONS {
            for field in fields(&doc, update) {
                let path = format!("{section}.{field}");
                let schema = &doc["components"]["schemas"][update]["properties"][&field];
                if RESTART_REQUIRED.contains(&path.as_str()) {
                    assert!(schema.get("maximum").is_none(), "{path}: {schema}");
                    continue;
                }
                let (min, max) = (&schema["minimum"], &schema["maximum"]);
                let (Some(min), Some(max)) = (min.as_u64(), max.as_u64()) else {
                    panic!("{path} is live and needs bounds: {schema}");
                };
                let refused = |v: u64| {
                    let patch: ConfigOverrides =
                        serde_json::from_value(json!({ section: { &field: v } }))
                            .unwrap_or_else(|e| panic!("{path}: {e}"));
                    patch.invalid().map(|(named, _)| named.to_string())
                };
                assert_eq!(refused(min), None, "{path} = {min}");
                assert_eq!(refused(max), None, "{path} = {max}");
                assert_eq!(refused(max + 1), Some(path.clone()), "{path} = {max} + 1");
                if min > 0 {
                    assert_eq!(refused(min - 1), Some(path.clone()), "{path} = {min} - 1");
                }
            }
        }
    }
}
