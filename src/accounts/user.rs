//! The user aggregate: created, changed (email, role, status, quota, rate limit), given a new
//! password, deleted. Its events are past tense and versioned like the VM's; none carries a
//! password or a hash.

use serde::{Deserialize, Serialize};

use super::quota::QuotaOverrides;
use super::AccountError;

/// Whether a user may sign in. A disabled user's tokens stop working at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// The user as its events leave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub username: String,
    pub email: Option<String>,
    pub role: String,
    /// `None` until created.
    pub status: Option<UserStatus>,
    pub quota: QuotaOverrides,
    pub rate_limit: Option<u32>,
    pub deleted: bool,
}

/// A change of some of a user's settings; `None` leaves one as it is. For `email` and
/// `rate_limit`, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<QuotaOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Option<u32>>,
}

impl UserChange {
    pub fn is_empty(&self) -> bool {
        *self == UserChange::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    Create {
        username: String,
        email: Option<String>,
        role: String,
        quota: QuotaOverrides,
        rate_limit: Option<u32>,
    },
    Change(UserChange),
    /// A new password was set (by the user, or by an admin for them).
    SetPassword {
        by_admin: bool,
    },
    /// `transferred_to`: the user who took over the VMs, if any.
    Delete {
        transferred_to: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    #[serde(rename_all = "camelCase")]
    UserCreated {
        username: String,
        email: Option<String>,
        role: String,
        quota: QuotaOverrides,
        rate_limit: Option<u32>,
    },
    UserChanged(UserChange),
    #[serde(rename_all = "camelCase")]
    UserPasswordChanged {
        by_admin: bool,
    },
    #[serde(rename_all = "camelCase")]
    UserDeleted {
        transferred_to: Option<String>,
    },
}

impl UserEvent {
    pub const TYPE_NAMES: [&'static str; 4] = [
        "UserCreated",
        "UserChanged",
        "UserPasswordChanged",
        "UserDeleted",
    ];

    pub fn type_name(&self) -> &'static str {
        match self {
            UserEvent::UserCreated { .. } => "UserCreated",
            UserEvent::UserChanged(_) => "UserChanged",
            UserEvent::UserPasswordChanged { .. } => "UserPasswordChanged",
            UserEvent::UserDeleted { .. } => "UserDeleted",
        }
    }

    pub fn version(&self) -> &'static str {
        "1"
    }
}

impl User {
    fn existing(&self) -> Result<(), AccountError> {
        match (self.status, self.deleted) {
            (Some(_), false) => Ok(()),
            (None, _) | (Some(_), true) => Err(AccountError::NotFound),
        }
    }

    /// The pure decision: the events `command` produces in this state.
    pub fn decide(&self, command: UserCommand) -> Result<Vec<UserEvent>, AccountError> {
        match command {
            UserCommand::Create {
                username,
                email,
                role,
                quota,
                rate_limit,
            } => match self.status {
                Some(_) => Err(AccountError::AlreadyExists),
                None => Ok(vec![UserEvent::UserCreated {
                    username,
                    email,
                    role,
                    quota,
                    rate_limit,
                }]),
            },
            UserCommand::Change(change) => {
                self.existing()?;
                // Only what differs is recorded.
                let change = UserChange {
                    email: change.email.filter(|e| *e != self.email),
                    role: change.role.filter(|r| *r != self.role),
                    status: change.status.filter(|s| Some(*s) != self.status),
                    quota: change.quota.filter(|q| *q != self.quota),
                    rate_limit: change.rate_limit.filter(|r| *r != self.rate_limit),
                };
                if change.is_empty() {
                    return Err(AccountError::NothingToChange);
                }
                Ok(vec![UserEvent::UserChanged(change)])
            }
            UserCommand::SetPassword { by_admin } => {
                self.existing()?;
                Ok(vec![UserEvent::UserPasswordChanged { by_admin }])
            }
            UserCommand::Delete { transferred_to } => {
                self.existing()?;
                Ok(vec![UserEvent::UserDeleted { transferred_to }])
            }
        }
    }

    pub fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated {
                username,
                email,
                role,
                quota,
                rate_limit,
            } => {
                *self = User {
                    username,
                    email,
                    role,
                    status: Some(UserStatus::Active),
                    quota,
                    rate_limit,
                    deleted: false,
                }
            }
            UserEvent::UserChanged(change) => {
                if let Some(email) = change.email {
                    self.email = email;
                }
                if let Some(role) = change.role {
                    self.role = role;
                }
                if let Some(status) = change.status {
                    self.status = Some(status);
                }
                if let Some(quota) = change.quota {
                    self.quota = quota;
                }
                if let Some(rate_limit) = change.rate_limit {
                    self.rate_limit = rate_limit;
                }
            }
            UserEvent::UserPasswordChanged { .. } => {}
            UserEvent::UserDeleted { .. } => self.deleted = true,
        }
    }
}
