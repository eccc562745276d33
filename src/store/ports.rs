//! Host port reservations: a host port forwarded to a VM's guest is held by that VM alone, from
//! the transaction that records its network to the one that records its deletion. The event
//! repository keeps them in step with the VM's state in the command's own transaction, so a
//! port taken by another VM refuses the whole command ([`StoreError::PortTaken`]).

use std::collections::BTreeSet;

use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::vm::{Protocol, Vm, VmStatus};

/// The ports `vm` holds: those of its network while it exists and is not deleted.
fn held(vm: &Vm) -> BTreeSet<(Protocol, u16)> {
    match vm.status {
        Some(VmStatus::Deleted) | None => BTreeSet::new(),
        Some(_) => vm.spec.network.held_ports().into_iter().collect(),
    }
}

/// Whether a change from `before` to `after` takes or releases host ports.
pub fn ports_change(before: &Vm, after: &Vm) -> bool {
    held(before) != held(after)
}

/// Keeps the VM's reservations in step with a change from `before` to `after`.
pub async fn hold_ports(
    conn: &mut PgConnection,
    before: &Vm,
    after: &Vm,
) -> Result<(), StoreError> {
    let (old, new) = (held(before), held(after));
    if old == new {
        return Ok(());
    }
    for (protocol, port) in old.difference(&new) {
        sqlx::query(
            "DELETE FROM port_reservations WHERE protocol = $1 AND host_port = $2 AND vm_id = $3",
        )
        .bind(protocol.as_str())
        .bind(i32::from(*port))
        .bind(&before.id)
        .execute(&mut *conn)
        .await?;
    }
    for (protocol, port) in new.difference(&old) {
        sqlx::query(
            "INSERT INTO port_reservations (protocol, host_port, vm_id) VALUES ($1, $2, $3)",
        )
        .bind(protocol.as_str())
        .bind(i32::from(*port))
        .bind(&after.id)
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::PortTaken {
                protocol: *protocol,
                port: *port,
            },
            _ => e.into(),
        })?;
    }
    Ok(())
}

/// The ports of `protocol` between `start` and `end` that VMs other than `except` hold.
pub async fn taken(
    pool: &PgPool,
    protocol: Protocol,
    start: u16,
    end: u16,
    except: Option<&str>,
) -> Result<BTreeSet<u16>, StoreError> {
    let ports: Vec<i32> = sqlx::query_scalar(
        "SELECT host_port FROM port_reservations
         WHERE protocol = $1 AND host_port BETWEEN $2 AND $3
           AND ($4::text IS NULL OR vm_id <> $4)",
    )
    .bind(protocol.as_str())
    .bind(i32::from(start))
    .bind(i32::from(end))
    .bind(except)
    .fetch_all(pool)
    .await?;
    Ok(ports
        .into_iter()
        .filter_map(|p| u16::try_from(p).ok())
        .collect())
}
