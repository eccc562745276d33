//! The role aggregate: the custom roles admins add, and the parts of the built-in ones (`admin`,
//! `user`, `viewer`) that may change (description and rate limit). A role's permissions are ids
//! from the catalog (`auth::permission`), checked before a command is made.

use serde::{Deserialize, Serialize};

use super::AccountError;
use crate::auth::permission::Scope;

/// The role as its events (or, for a built-in one, the migration that made it) leave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub scope: Scope,
    pub rate_limit: Option<u32>,
    pub built_in: bool,
    pub exists: bool,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            name: String::new(),
            description: String::new(),
            permissions: Vec::new(),
            scope: Scope::Own,
            rate_limit: None,
            built_in: false,
            exists: false,
        }
    }
}

/// A change of some of a role's settings; `None` leaves one as it is (`Some(None)` clears the
/// rate limit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Option<u32>>,
}

impl RoleChange {
    pub fn is_empty(&self) -> bool {
        *self == RoleChange::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleCommand {
    Create {
        name: String,
        description: String,
        permissions: Vec<String>,
        scope: Scope,
        rate_limit: Option<u32>,
    },
    Change(RoleChange),
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleEvent {
    #[serde(rename_all = "camelCase")]
    RoleCreated {
        name: String,
        description: String,
        permissions: Vec<String>,
        scope: Scope,
        rate_limit: Option<u32>,
    },
    RoleChanged(RoleChange),
    RoleDeleted {},
}

impl RoleEvent {
    pub const TYPE_NAMES: [&'static str; 3] = ["RoleCreated", "RoleChanged", "RoleDeleted"];

    pub fn type_name(&self) -> &'static str {
        match self {
            RoleEvent::RoleCreated { .. } => "RoleCreated",
            RoleEvent::RoleChanged(_) => "RoleChanged",
            RoleEvent::RoleDeleted {} => "RoleDeleted",
        }
    }

    pub fn version(&self) -> &'static str {
        "1"
    }
}

impl Role {
    /// The pure decision: the events `command` produces in this state.
    pub fn decide(&self, id: &str, command: RoleCommand) -> Result<Vec<RoleEvent>, AccountError> {
        match command {
            RoleCommand::Create {
                name,
                description,
                permissions,
                scope,
                rate_limit,
            } => match self.exists {
                true => Err(AccountError::AlreadyExists),
                false => Ok(vec![RoleEvent::RoleCreated {
                    name,
                    description,
                    permissions,
                    scope,
                    rate_limit,
                }]),
            },
            RoleCommand::Change(change) => {
                if !self.exists {
                    return Err(AccountError::NotFound);
                }
                let change = RoleChange {
                    name: change.name.filter(|n| *n != self.name),
                    description: change.description.filter(|d| *d != self.description),
                    permissions: change.permissions.filter(|p| *p != self.permissions),
                    scope: change.scope.filter(|s| *s != self.scope),
                    rate_limit: change.rate_limit.filter(|r| *r != self.rate_limit),
                };
                if change.is_empty() {
                    return Err(AccountError::NothingToChange);
                }
                let fixed =
                    change.name.is_some() || change.permissions.is_some() || change.scope.is_some();
                if self.built_in && fixed {
                    return Err(AccountError::BuiltIn(id.to_string()));
                }
                Ok(vec![RoleEvent::RoleChanged(change)])
            }
            RoleCommand::Delete => match (self.exists, self.built_in) {
                (false, _) => Err(AccountError::NotFound),
                (true, true) => Err(AccountError::BuiltIn(id.to_string())),
                (true, false) => Ok(vec![RoleEvent::RoleDeleted {}]),
            },
        }
    }

    pub fn apply(&mut self, event: RoleEvent) {
        match event {
            RoleEvent::RoleCreated {
                name,
                description,
                permissions,
                scope,
                rate_limit,
            } => {
                *self = Role {
                    name,
                    description,
                    permissions,
                    scope,
                    rate_limit,
                    built_in: false,
                    exists: true,
                }
            }
            RoleEvent::RoleChanged(change) => {
                if let Some(name) = change.name {
                    self.name = name;
                }
                if let Some(description) = change.description {
                    self.description = description;
                }
                if let Some(permissions) = change.permissions {
                    self.permissions = permissions;
                }
                if let Some(scope) = change.scope {
                    self.scope = scope;
                }
                if let Some(rate_limit) = change.rate_limit {
                    self.rate_limit = rate_limit;
                }
            }
            RoleEvent::RoleDeleted {} => self.exists = false,
        }
    }
}
