//! Given/when/then, one test per rule of the account aggregates.

use super::role::{Role, RoleChange, RoleCommand, RoleEvent};
use super::user::{User, UserChange, UserCommand, UserEvent, UserStatus};
use super::{AccountError, ConfigOverrides, Quota, QuotaOverrides, QuotaResource, Usage};
use crate::auth::permission::Scope;

fn created() -> User {
    let mut user = User::default();
    user.apply(UserEvent::UserCreated {
        username: "alice".into(),
        email: None,
        role: "user".into(),
        quota: QuotaOverrides::default(),
        rate_limit: None,
    });
    user
}

#[test]
fn a_new_user_is_active() {
    assert_eq!(created().status, Some(UserStatus::Active));
}

#[test]
fn a_user_is_created_once() {
    let create = UserCommand::Create {
        username: "alice".into(),
        email: None,
        role: "user".into(),
        quota: QuotaOverrides::default(),
        rate_limit: None,
    };
    assert_eq!(created().decide(create), Err(AccountError::AlreadyExists));
}

#[test]
fn a_change_records_only_what_differs() {
    let change = UserChange {
        role: Some("user".into()),
        status: Some(UserStatus::Disabled),
        ..UserChange::default()
    };
    let events = created().decide(UserCommand::Change(change)).unwrap();
    assert_eq!(
        events,
        vec![UserEvent::UserChanged(UserChange {
            status: Some(UserStatus::Disabled),
            ..UserChange::default()
        })]
    );
}

#[test]
fn a_change_that_changes_nothing_is_refused() {
    let same = UserChange {
        role: Some("user".into()),
        ..UserChange::default()
    };
    assert_eq!(
        created().decide(UserCommand::Change(same)),
        Err(AccountError::NothingToChange)
    );
}

#[test]
fn a_password_change_records_no_secret() {
    let events = created()
        .decide(UserCommand::SetPassword { by_admin: true })
        .unwrap();
    let json = serde_json::to_string(&events).unwrap();
    assert_eq!(json, r#"[{"UserPasswordChanged":{"byAdmin":true}}]"#);
}

#[test]
fn a_deleted_user_takes_no_command() {
    let mut user = created();
    user.apply(UserEvent::UserDeleted {
        transferred_to: None,
    });
    assert_eq!(
        user.decide(UserCommand::SetPassword { by_admin: false }),
        Err(AccountError::NotFound)
    );
}

fn custom_role() -> Role {
    let mut role = Role::default();
    role.apply(RoleEvent::RoleCreated {
        name: "Operator".into(),
        description: String::new(),
        permissions: vec!["vm:read".into(), "vm:start".into()],
        scope: Scope::All,
        rate_limit: None,
    });
    role
}

#[test]
fn a_built_in_role_keeps_its_permissions() {
    let admin = Role {
        built_in: true,
        exists: true,
        permissions: vec!["*".into()],
        ..Role::default()
    };
    let change = RoleChange {
        permissions: Some(vec!["vm:read".into()]),
        ..RoleChange::default()
    };
    assert_eq!(
        admin.decide("admin", RoleCommand::Change(change)),
        Err(AccountError::BuiltIn("admin".into()))
    );
    assert_eq!(
        admin.decide("admin", RoleCommand::Delete),
        Err(AccountError::BuiltIn("admin".into()))
    );
}

#[test]
fn a_built_in_role_may_change_its_rate_limit() {
    let user = Role {
        built_in: true,
        exists: true,
        ..Role::default()
    };
    let change = RoleChange {
        rate_limit: Some(Some(500)),
        ..RoleChange::default()
    };
    assert!(user.decide("user", RoleCommand::Change(change)).is_ok());
}

#[test]
fn a_custom_role_can_be_deleted() {
    assert_eq!(
        custom_role().decide("operator", RoleCommand::Delete),
        Ok(vec![RoleEvent::RoleDeleted {}])
    );
}

#[test]
fn a_quota_names_the_first_resource_a_change_would_exceed() {
    let quota = Quota {
        vms: Some(5),
        vcpus: Some(8),
        memory: None,
        disk: Some(100),
    };
    let used = Usage {
        vms: 4,
        vcpus: 7,
        memory: 999_999,
        disk: 10,
    };
    let one = |cpu| Usage {
        vms: 1,
        vcpus: cpu,
        memory: 1024,
        disk: 10,
    };
    assert_eq!(quota.exceeded_by(&used, &one(1)), None);
    assert_eq!(
        quota.exceeded_by(&used, &one(2)),
        Some((QuotaResource::Vcpus, 8))
    );
    let full = Usage { vms: 5, ..used };
    assert_eq!(
        quota.exceeded_by(&full, &one(1)),
        Some((QuotaResource::Vms, 5))
    );
}

#[test]
fn config_overrides_merge_and_null_clears() {
    let set: ConfigOverrides = serde_json::from_str(
        r#"{"limits": {"requestsPerMinute": 7}, "system": {"maxVmsPerUser": 2}}"#,
    )
    .unwrap();
    let clear: ConfigOverrides =
        serde_json::from_str(r#"{"system": {"maxVmsPerUser": null}}"#).unwrap();
    let after = ConfigOverrides::default().patched(&set).patched(&clear);
    assert_eq!(after.limits.requests_per_minute, Some(Some(7)));
    assert_eq!(after.system.max_vms_per_user, None);
    assert_eq!(
        serde_json::to_string(&after).unwrap(),
        r#"{"system":{},"limits":{"requestsPerMinute":7}}"#
    );
}

#[test]
fn a_config_value_out_of_range_is_named() {
    let bad: ConfigOverrides =
        serde_json::from_str(r#"{"limits": {"requestsPerMinute": 0}}"#).unwrap();
    assert_eq!(
        bad.invalid().map(|(f, _)| f),
        Some("limits.requestsPerMinute")
    );
}
