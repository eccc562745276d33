//! What a caller may do: the catalog of permissions (`area:verb`), the set a role grants, and the
//! scope it grants them over. Every REST operation and `/ws` action names the one permission it
//! needs (REST: `x-permission` in the OpenAPI document; a test walks it), and a caller without it
//! gets 403 `FORBIDDEN` naming it.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One thing a role may allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    VmRead,
    VmCreate,
    VmUpdate,
    VmDelete,
    VmStart,
    VmStop,
    VmRestart,
    VmPause,
    VmResume,
    VmReset,
    VmConsole,
    JobRead,
    JobCancel,
    EventRead,
    UserRead,
    UserCreate,
    UserUpdate,
    UserDelete,
    RoleRead,
    RoleCreate,
    RoleUpdate,
    RoleDelete,
    ConfigRead,
    ConfigUpdate,
    SystemRead,
    WebhookRead,
    WebhookCreate,
    WebhookUpdate,
    WebhookDelete,
    ImageRead,
    ImageCreate,
    ImageDelete,
}

/// What `GET /permissions` says of one permission.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PermissionInfo {
    /// `area:verb`, e.g. `vm:create`.
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// The area: `vm`, `job`, `event`, `user`, `role`, `config`, `system`, `webhook` or `image`.
    pub category: &'static str,
}

impl Permission {
    pub const ALL: [Permission; 32] = [
        Permission::VmRead,
        Permission::VmCreate,
        Permission::VmUpdate,
        Permission::VmDelete,
        Permission::VmStart,
        Permission::VmStop,
        Permission::VmRestart,
        Permission::VmPause,
        Permission::VmResume,
        Permission::VmReset,
        Permission::VmConsole,
        Permission::JobRead,
        Permission::JobCancel,
        Permission::EventRead,
        Permission::UserRead,
        Permission::UserCreate,
        Permission::UserUpdate,
        Permission::UserDelete,
        Permission::RoleRead,
        Permission::RoleCreate,
        Permission::RoleUpdate,
        Permission::RoleDelete,
        Permission::ConfigRead,
        Permission::ConfigUpdate,
        Permission::SystemRead,
        Permission::WebhookRead,
        Permission::WebhookCreate,
        Permission::WebhookUpdate,
        Permission::WebhookDelete,
        Permission::ImageRead,
        Permission::ImageCreate,
        Permission::ImageDelete,
    ];

    /// The id, its display name and what it allows.
    pub fn info(self) -> PermissionInfo {
        let (id, name, description) = match self {
            Permission::VmRead => (
                "vm:read",
                "Read VMs",
                "List VMs, read one, its events and its history.",
            ),
            Permission::VmCreate => ("vm:create", "Create VMs", "Create VMs (within the quota)."),
            Permission::VmUpdate => (
                "vm:update",
                "Change VMs",
                "Rename a VM, change its description, CPUs and memory.",
            ),
            Permission::VmDelete => (
                "vm:delete",
                "Delete VMs",
                "Delete a stopped VM and its disk.",
            ),
            Permission::VmStart => ("vm:start", "Start VMs", "Start a stopped VM."),
            Permission::VmStop => ("vm:stop", "Stop VMs", "Stop a VM, gracefully or by force."),
            Permission::VmRestart => ("vm:restart", "Restart VMs", "Restart a running VM."),
            Permission::VmPause => ("vm:pause", "Pause VMs", "Pause a running VM."),
            Permission::VmResume => ("vm:resume", "Resume VMs", "Resume a paused VM."),
            Permission::VmReset => ("vm:reset", "Reset VMs", "Hard-reset a running VM."),
            Permission::VmConsole => (
                "vm:console",
                "Use consoles",
                "Open a VM's serial or graphical console.",
            ),
            Permission::JobRead => (
                "job:read",
                "Read jobs",
                "List jobs, read one, wait for one.",
            ),
            Permission::JobCancel => ("job:cancel", "Cancel jobs", "Cancel a queued job."),
            Permission::EventRead => (
                "event:read",
                "Read the log",
                "Read the audit log (`/events`), the log for people (`/logs`) and the live feed.",
            ),
            Permission::UserRead => ("user:read", "Read users", "List users and read one."),
            Permission::UserCreate => ("user:create", "Create users", "Create users."),
            Permission::UserUpdate => (
                "user:update",
                "Change users",
                "Change a user's role, status, quota, limits, email or password.",
            ),
            Permission::UserDelete => (
                "user:delete",
                "Delete users",
                "Delete a user (handing their VMs to another).",
            ),
            Permission::RoleRead => (
                "role:read",
                "Read roles",
                "List roles and the permission catalog.",
            ),
            Permission::RoleCreate => ("role:create", "Create roles", "Add custom roles."),
            Permission::RoleUpdate => ("role:update", "Change roles", "Change custom roles."),
            Permission::RoleDelete => (
                "role:delete",
                "Delete roles",
                "Delete custom roles no user has.",
            ),
            Permission::ConfigRead => (
                "config:read",
                "Read the configuration",
                "Read the configuration.",
            ),
            Permission::ConfigUpdate => (
                "config:update",
                "Change the configuration",
                "Change the live configuration.",
            ),
            Permission::SystemRead => (
                "system:read",
                "Read the system",
                "Read the host's figures and statistics, and the system feed topics.",
            ),
            Permission::WebhookRead => (
                "webhook:read",
                "Read webhooks",
                "List webhooks (one's own, or everyone's with scope `all`) and their deliveries.",
            ),
            Permission::WebhookCreate => (
                "webhook:create",
                "Create webhooks",
                "Add a webhook that receives the events of the VMs one may read.",
            ),
            Permission::WebhookUpdate => (
                "webhook:update",
                "Change webhooks",
                "Change a webhook's URL, events, secret or whether it is active.",
            ),
            Permission::WebhookDelete => ("webhook:delete", "Delete webhooks", "Delete a webhook."),
            Permission::ImageRead => (
                "image:read",
                "Read images",
                "List the images VMs can be made from and read one.",
            ),
            Permission::ImageCreate => (
                "image:create",
                "Add images",
                "Import an image from a URL or upload one.",
            ),
            Permission::ImageDelete => (
                "image:delete",
                "Delete images",
                "Delete an image no VM uses.",
            ),
        };
        let category = id.split(':').next().unwrap_or(id);
        PermissionInfo {
            id,
            name,
            description,
            category,
        }
    }

    pub fn id(self) -> &'static str {
        self.info().id
    }

    pub fn parse(id: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.id() == id)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// What a role grants: every permission (`*`), or the ones it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    Everything,
    Only(BTreeSet<Permission>),
}

/// A permission id a role lists that the catalog does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a permission (GET /api/v1/permissions lists them), nor '*'")]
pub struct UnknownPermission(pub String);

impl Grants {
    /// Parses stored or submitted ids: `*` grants everything, whatever else is listed; an id
    /// that is neither `*` nor a permission is refused, beside `*` too.
    pub fn parse<S: AsRef<str>>(ids: &[S]) -> Result<Grants, UnknownPermission> {
        let listed = ids
            .iter()
            .filter(|id| id.as_ref() != "*")
            .map(|id| {
                Permission::parse(id.as_ref())
                    .ok_or_else(|| UnknownPermission(id.as_ref().to_string()))
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if ids.iter().any(|id| id.as_ref() == "*") {
            return Ok(Grants::Everything);
        }
        Ok(Grants::Only(listed))
    }

    pub fn allows(&self, permission: Permission) -> bool {
        match self {
            Grants::Everything => true,
            Grants::Only(set) => set.contains(&permission),
        }
    }

    /// The ids, as stored and shown (`["*"]` for everything).
    pub fn ids(&self) -> Vec<String> {
        match self {
            Grants::Everything => vec!["*".to_string()],
            Grants::Only(set) => set.iter().map(|p| p.id().to_string()).collect(),
        }
    }
}

/// A user's role as the server applies it: what it grants, over whose VMs, and its request rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleGrant {
    pub id: String,
    pub grants: Grants,
    pub scope: Scope,
    /// Requests a minute for the role's users; `None` takes the configured default.
    pub rate_limit: Option<u32>,
}

impl RoleGrant {
    /// Whether `other` allows exactly what this one does (its name or request rate aside): an
    /// open connection admitted under one may go on under the other.
    pub fn allows_the_same_as(&self, other: &RoleGrant) -> bool {
        self.grants == other.grants && self.scope == other.scope
    }

    /// Whether quotas apply: a role that grants everything has none.
    pub fn unlimited(&self) -> bool {
        self.grants == Grants::Everything
    }
}

/// Whose VMs (and their jobs and events) a role's permissions reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The user's own.
    Own,
    /// Everyone's.
    All,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Own => "own",
            Scope::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "own" => Some(Scope::Own),
            "all" => Some(Scope::All),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_has_a_distinct_area_verb_id_that_parses_back() {
        let mut seen = BTreeSet::new();
        for p in Permission::ALL {
            let info = p.info();
            assert!(seen.insert(info.id), "{} twice", info.id);
            let (area, verb) = info.id.split_once(':').expect("area:verb");
            assert_eq!(area, info.category);
            assert!(!verb.is_empty());
            assert_eq!(Permission::parse(info.id), Some(p));
        }
    }

    #[test]
    fn a_star_grants_everything_and_a_list_only_what_it_names() {
        assert!(Grants::parse(&["*"])
            .unwrap()
            .allows(Permission::ConfigUpdate));
        let only = Grants::parse(&["vm:read", "job:read"]).unwrap();
        assert!(only.allows(Permission::VmRead));
        assert!(!only.allows(Permission::VmStart));
        assert_eq!(only.ids(), vec!["vm:read", "job:read"]);
    }

    #[test]
    fn an_unknown_permission_is_named() {
        assert_eq!(
            Grants::parse(&["vm:read", "vm:fly"]),
            Err(UnknownPermission("vm:fly".into()))
        );
    }

    #[test]
    fn an_unknown_permission_is_refused_beside_everything_too() {
        assert_eq!(
            Grants::parse(&["vm:fly", "*"]),
            Err(UnknownPermission("vm:fly".into()))
        );
        assert_eq!(Grants::parse(&["vm:read", "*"]), Ok(Grants::Everything));
    }
}
