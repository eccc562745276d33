//! The secret parts of VMs' cloud-init settings (`vm_cloud_init_secrets`): password hashes and
//! user-data, kept outside the event log. The event repository writes them in the transaction of
//! the command that set them (so the log's `passwordSet`/`userDataSet` and this table never
//! disagree) and removes them in the one that records the VM's deletion; the start job reads them
//! to build the NoCloud seed.

use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};

use super::StoreError;
use crate::vm::{CloudInitSecrets, Vm, VmStatus};

/// Whether a command writes or removes secrets (and so needs its own transaction).
pub fn secrets_change(secrets: Option<&CloudInitSecrets>, before: &Vm, after: &Vm) -> bool {
    secrets.is_some() || deleted(before, after)
}

fn deleted(before: &Vm, after: &Vm) -> bool {
    after.status == Some(VmStatus::Deleted) && before.status != Some(VmStatus::Deleted)
}

/// Keeps the secrets in step with a command: `secrets` (sent with the command) replace the
/// VM's; a deletion removes them.
pub async fn hold_secrets(
    conn: &mut PgConnection,
    secrets: Option<&CloudInitSecrets>,
    before: &Vm,
    after: &Vm,
) -> Result<(), StoreError> {
    if deleted(before, after) {
        sqlx::query("DELETE FROM vm_cloud_init_secrets WHERE vm_id = $1")
            .bind(&after.id)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    let Some(secrets) = secrets else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO vm_cloud_init_secrets (vm_id, password_hashes, user_data) VALUES ($1, $2, $3)
         ON CONFLICT (vm_id) DO UPDATE
           SET password_hashes = EXCLUDED.password_hashes, user_data = EXCLUDED.user_data,
               updated_at = now()",
    )
    .bind(&after.id)
    .bind(Json(&secrets.password_hashes))
    .bind(&secrets.user_data)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A row: the password hashes by user name, and the user-data.
type SecretsRow = (Json<Vec<(String, String)>>, Option<String>);

/// The VM's secrets; none recorded reads as none set.
pub async fn secrets(pool: &PgPool, vm_id: &str) -> Result<CloudInitSecrets, StoreError> {
    let row: Option<SecretsRow> = sqlx::query_as(
        "SELECT password_hashes, user_data FROM vm_cloud_init_secrets WHERE vm_id = $1",
    )
    .bind(vm_id)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|(Json(password_hashes), user_data)| CloudInitSecrets {
            password_hashes,
            user_data,
        })
        .unwrap_or_default())
}
