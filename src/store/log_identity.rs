//! Which event log this database holds (its id, made once by migration 0009), and what the log
//! holds at one position: what the relay needs to tell whether a NATS stream carries this log.

use std::fmt;
use std::str::FromStr;

use sqlx::PgPool;
use uuid::Uuid;

use super::audit::{AuditRow, LEVEL_SQL};
use super::StoreError;

/// The identity of one event log; a backup or a copy of the database keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogId(Uuid);

impl LogId {
    pub fn new(id: Uuid) -> LogId {
        LogId(id)
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for LogId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<LogId, uuid::Error> {
        Uuid::parse_str(s).map(LogId)
    }
}

/// This database's log id.
pub async fn load(pool: &PgPool) -> Result<LogId, StoreError> {
    let id: Uuid = sqlx::query_scalar("SELECT log_id FROM event_log_identity")
        .fetch_one(pool)
        .await?;
    Ok(LogId(id))
}

/// The event at `position`, if the log has one there.
pub async fn event_at(pool: &PgPool, position: i64) -> Result<Option<AuditRow>, StoreError> {
    Ok(sqlx::query_as(&format!(
        "SELECT e.position, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type,
                e.event_version AS version, e.payload, e.metadata, e.recorded_at,
                {LEVEL_SQL} AS level
         FROM events e WHERE e.position = $1"
    ))
    .bind(position)
    .fetch_optional(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_id_reads_back_what_it_writes() {
        let id = LogId::new(Uuid::new_v4());
        assert_eq!(id.to_string().parse::<LogId>().ok(), Some(id));
        assert!("not-a-uuid".parse::<LogId>().is_err());
    }
}
