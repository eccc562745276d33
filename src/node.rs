//! This node's name among the nodes that share a database. Jobs a node claims are its own (see
//! `store::jobs`), so a node must know its name again after a restart: unless it is configured, it
//! is made once and kept in the data dir; a node that stops hands its own running jobs back.

use std::path::Path;

use anyhow::Context;

/// The configured node id, or the one kept in `<data_dir>/node-id` (made on first use).
pub fn load_or_create_id(configured: Option<&str>, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(id) = configured {
        return Ok(id.to_string());
    }
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "the node id in {} could not be read",
                path.display()
            )))
        }
    }
    let id = format!("node-{}", nanoid::nanoid!(10, &crate::auth::ID_ALPHABET));
    std::fs::write(&path, &id)
        .with_context(|| format!("the node id could not be written to {}", path.display()))?;
    Ok(id)
}

/// At the end of a graceful stop, hands this node's running jobs back to the queue (other nodes
/// sharing the database go on with theirs). The pool's connections belong to the runtimes that
/// made them, which are gone by then (the HTTP workers', the actors'), so this goes over a
/// connection made on the caller's runtime.
pub async fn hand_back_jobs(pool: &sqlx::PgPool, node: &str) {
    let handed_back = async {
        let own = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*pool.connect_options()).clone())
            .await?;
        let ids = crate::store::jobs::hand_back(&own, node).await;
        own.close().await;
        ids
    };
    match handed_back.await {
        Ok(ids) if !ids.is_empty() => {
            tracing::info!(jobs = ?ids, "handed running jobs back to the queue")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %crate::telemetry::chain(&e), "running jobs could not be handed back")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_node_id_is_kept_and_a_configured_one_wins() {
        let dir = std::env::temp_dir().join(format!("voidvm-node-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = load_or_create_id(None, &dir).unwrap();
        assert!(made.starts_with("node-"));
        assert_eq!(load_or_create_id(None, &dir).unwrap(), made);
        assert_eq!(load_or_create_id(Some("n1"), &dir).unwrap(), "n1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
