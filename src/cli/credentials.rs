//! Where the CLI keeps the server URL and token between commands.
//!
//! `voidvm login` writes `$XDG_CONFIG_HOME/voidvm/credentials.json` (else
//! `$HOME/.config/voidvm/credentials.json`). The token is a secret: the directory is made 0700
//! and the file is written to a temporary file created with mode 0600, then renamed over the old
//! one, so it is never readable by others and never half-written. Flags and environment
//! variables override what the file says ([`resolve`]).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::client::{CliError, CliResult};

/// The server a fresh install listens on.
pub const DEFAULT_URL: &str = "http://localhost:3000";

/// What `login` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub token: String,
    #[serde(default)]
    pub username: Option<String>,
}

/// The environment, as far as finding the config directory needs it (a trait so tests can
/// supply their own).
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's real environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// The credentials file's path, or `None` when neither `XDG_CONFIG_HOME` nor `HOME` is set.
pub fn path(env: &impl Environment) -> Option<PathBuf> {
    let base = match env.var("XDG_CONFIG_HOME").map(PathBuf::from) {
        // The XDG spec says a relative value is to be ignored.
        Some(dir) if dir.is_absolute() => dir,
        _ => PathBuf::from(env.var("HOME")?).join(".config"),
    };
    Some(base.join("voidvm").join("credentials.json"))
}

/// The stored credentials; `None` if there is no file.
pub fn load(env: &impl Environment) -> CliResult<Option<Credentials>> {
    let Some(path) = path(env) else {
        return Ok(None);
    };
    read(&path)
}

fn read(path: &Path) -> CliResult<Option<Credentials>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading {}", path.display()))
                .into())
        }
    };
    let credentials = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a credentials file; delete it and log in again",
            path.display()
        )
    })?;
    Ok(Some(credentials))
}

/// Writes the credentials file (dir 0700, file 0600, atomically); answers its path.
pub fn save(env: &impl Environment, credentials: &Credentials) -> CliResult<PathBuf> {
    let path = path(env).ok_or(CliError::NoConfigDir)?;
    write(&path, credentials)?;
    Ok(path)
}

fn write(path: &Path, credentials: &Credentials) -> CliResult<()> {
    let dir = path
        .parent()
        .context("the credentials path has no directory")?;
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // An existing directory is tightened, not trusted.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting the mode of {}", dir.display()))?;
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("creating {}", dir.display()))
                .into())
        }
    }
    let tmp = dir.join(format!(".credentials.json.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| -> anyhow::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let text = serde_json::to_string_pretty(credentials).context("encoding the credentials")?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

/// Deletes the credentials file; answers whether there was one.
pub fn remove(env: &impl Environment) -> CliResult<bool> {
    let path = path(env).ok_or(CliError::NoConfigDir)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("deleting {}", path.display()))
            .into()),
    }
}

/// The server and token a command uses: the flags (which clap fills from `VOIDVM_URL` /
/// `VOIDVM_TOKEN` when absent) win over the file; the URL defaults to [`DEFAULT_URL`].
pub fn resolve(
    url: Option<&str>,
    token: Option<&str>,
    stored: Option<&Credentials>,
) -> (String, Option<String>) {
    let url = url
        .map(str::to_string)
        .or_else(|| stored.map(|c| c.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let token = token
        .map(str::to_string)
        .or_else(|| stored.map(|c| c.token.clone()));
    (url, token)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct FakeEnv(HashMap<&'static str, String>);

    impl Environment for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn temp_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("voidvm-cred-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn creds(token: &str) -> Credentials {
        Credentials {
            url: "http://h:1".into(),
            token: token.into(),
            username: Some("admin".into()),
        }
    }

    #[test]
    fn xdg_config_home_wins_over_home() {
        let env = FakeEnv(HashMap::from([
            ("XDG_CONFIG_HOME", "/x".into()),
            ("HOME", "/h".into()),
        ]));
        assert_eq!(
            path(&env),
            Some(PathBuf::from("/x/voidvm/credentials.json"))
        );
        let env = FakeEnv(HashMap::from([
            ("XDG_CONFIG_HOME", "rel".into()),
            ("HOME", "/h".into()),
        ]));
        assert_eq!(
            path(&env),
            Some(PathBuf::from("/h/.config/voidvm/credentials.json"))
        );
        assert_eq!(path(&FakeEnv(HashMap::new())), None);
    }

    #[test]
    fn the_file_is_0600_in_a_0700_dir_and_reads_back() {
        let home = temp_dir();
        let env = FakeEnv(HashMap::from([("HOME", home.display().to_string())]));
        let path = save(&env, &creds("t1")).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load(&env).unwrap(), Some(creds("t1")));
        // Replacing keeps the mode and leaves no temporary file behind.
        save(&env, &creds("t2")).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(load(&env).unwrap(), Some(creds("t2")));
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
        assert!(remove(&env).unwrap());
        assert!(!remove(&env).unwrap());
        assert_eq!(load(&env).unwrap(), None);
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn an_existing_open_dir_is_tightened() {
        let home = temp_dir();
        let dir = home.join(".config/voidvm");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = FakeEnv(HashMap::from([("HOME", home.display().to_string())]));
        save(&env, &creds("t")).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn flags_win_over_the_file() {
        let stored = creds("file-token");
        assert_eq!(
            resolve(None, None, Some(&stored)),
            ("http://h:1".to_string(), Some("file-token".to_string()))
        );
        assert_eq!(
            resolve(Some("http://o"), Some("flag"), Some(&stored)),
            ("http://o".to_string(), Some("flag".to_string()))
        );
        assert_eq!(resolve(None, None, None), (DEFAULT_URL.to_string(), None));
    }
}
