//! The `cloudInit` object that `voidvm vm create` and `vm update` send, made from a JSON file and
//! flags (`--hostname`, `--user-data`, `--user` with `--ssh-key`): the flags add to the file's
//! object, and the server checks the whole (its 400 names the field).

use std::path::Path;

use serde_json::{json, Map, Value};

use super::args::CloudInitArgs;
use super::client::{CliError, CliResult};

/// The `cloudInit` object, or `None` when neither a file nor a flag was given.
pub fn body(args: &CloudInitArgs) -> CliResult<Option<Value>> {
    let nothing = args.cloud_init.is_none()
        && args.hostname.is_none()
        && args.user_data.is_none()
        && args.user.is_none();
    if nothing {
        return Ok(None);
    }
    let mut object = match &args.cloud_init {
        Some(path) => match serde_json::from_str(&read(path)?) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err(usage(path, "it is not a JSON object")),
            Err(e) => return Err(usage(path, &format!("it is not JSON: {e}"))),
        },
        None => Map::new(),
    };
    if let Some(hostname) = &args.hostname {
        object.insert("hostname".into(), json!(hostname));
    }
    if let Some(path) = &args.user_data {
        object.insert("userData".into(), json!(read(path)?));
    }
    if let Some(user) = &args.user {
        let mut keys = Vec::new();
        for path in &args.ssh_keys {
            keys.extend(key_lines(&read(path)?));
        }
        if keys.is_empty() {
            return Err(CliError::Usage(
                "--ssh-key files hold no key (one per line)".to_string(),
            ));
        }
        let users = object.entry("users").or_insert_with(|| json!([]));
        let Some(list) = users.as_array_mut() else {
            return Err(CliError::Usage(
                "the --cloud-init file's `users` is not a list".to_string(),
            ));
        };
        list.push(json!({"name": user, "sshAuthorizedKeys": keys}));
    }
    Ok(Some(Value::Object(object)))
}

/// The keys of an `authorized_keys`-style text: its lines but blank ones and comments.
fn key_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn read(path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| usage(path, &e.to_string()))
}

fn usage(path: &Path, why: &str) -> CliError {
    CliError::Usage(format!("cannot use {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("voidvm-ci-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_file_and_no_flag_sends_nothing() {
        assert_eq!(body(&CloudInitArgs::default()).unwrap(), None);
    }

    #[test]
    fn flags_add_to_the_files_object() {
        let keys = file("# mine\nssh-ed25519 AAAA one\n\nssh-rsa BBBB two\n");
        let base = file(r#"{"networkConfig": "version: 2", "users": [{"name": "ops"}]}"#);
        let args = CloudInitArgs {
            cloud_init: Some(base.clone()),
            hostname: Some("web-1".into()),
            user_data: None,
            user: Some("alice".into()),
            ssh_keys: vec![keys.clone()],
        };
        let got = body(&args).unwrap().unwrap();
        assert_eq!(
            got,
            json!({"networkConfig": "version: 2", "hostname": "web-1", "users": [
                {"name": "ops"},
                {"name": "alice", "sshAuthorizedKeys": ["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"]}
            ]})
        );
        let _ = std::fs::remove_file(keys);
        let _ = std::fs::remove_file(base);
    }

    #[test]
    fn user_data_is_sent_as_it_is() {
        let data = file("#cloud-config\nruncmd: [\"true\"]\n");
        let args = CloudInitArgs {
            user_data: Some(data.clone()),
            ..CloudInitArgs::default()
        };
        let got = body(&args).unwrap().unwrap();
        assert_eq!(got["userData"], "#cloud-config\nruncmd: [\"true\"]\n");
        let _ = std::fs::remove_file(data);
    }

    #[test]
    fn unreadable_or_malformed_files_are_usage_errors() {
        let missing = CloudInitArgs {
            user_data: Some("/nonexistent/voidvm-user-data".into()),
            ..CloudInitArgs::default()
        };
        assert_eq!(body(&missing).unwrap_err().exit_code(), 2);
        let list = file("[1, 2]");
        let not_object = CloudInitArgs {
            cloud_init: Some(list.clone()),
            ..CloudInitArgs::default()
        };
        assert_eq!(body(&not_object).unwrap_err().exit_code(), 2);
        let empty = file("# only a comment\n");
        let no_keys = CloudInitArgs {
            user: Some("alice".into()),
            ssh_keys: vec![empty.clone()],
            ..CloudInitArgs::default()
        };
        assert_eq!(body(&no_keys).unwrap_err().exit_code(), 2);
        let _ = std::fs::remove_file(list);
        let _ = std::fs::remove_file(empty);
    }
}
