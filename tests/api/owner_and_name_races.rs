//! Deleting a user races nothing into owning VMs: creations by the user being deleted, and VMs
//! handed over (`transferTo`) to a user being deleted at the same moment, either commit before
//! the delete (which then answers 409 `USER_HAS_VMS`) or find the user gone and record nothing.
//! Afterwards every VM that is not deleted belongs to a user who exists. Two VMs swapping names
//! at once both find the other name taken (409), not a deadlock (500); concurrent creates of one
//! role id find it taken (409 `ROLE_EXISTS`).

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

async fn user_id(app: &TestApp, token: &str) -> String {
    let (_, me) = app
        .call_as(token, Method::GET, "/api/v1/auth/me", None)
        .await;
    me["data"]["id"].as_str().expect("an id").to_string()
}

/// Every VM that is not deleted belongs to a user who exists.
async fn no_vm_is_orphaned(app: &TestApp) {
    let (_, users) = app.call(Method::GET, "/api/v1/users?limit=100", None).await;
    let live: HashSet<String> = users["data"]["items"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["id"].as_str().map(str::to_string))
        .collect();
    let (_, vms) = app.list_vms("?limit=100").await;
    for vm in vms["data"]["items"].as_array().expect("vms") {
        let owner = vm["ownerId"].as_str().unwrap_or_default();
        assert!(live.contains(owner), "{vm} belongs to a deleted user");
    }
}

#[actix_rt::test]
async fn creations_racing_their_owners_delete_never_leave_vms_to_nobody() {
    let app = spawn_app().await;
    for round in 0..4 {
        let name = format!("racer{round}");
        let token = app.create_user(&name).await;
        let id = user_id(&app, &token).await;
        let creates = (0..4).map(|n| {
            let (app, token) = (&app, token.clone());
            async move {
                let body =
                    json!({"name": format!("r{round}-{n}"), "cpu": 1, "memory": 128, "disk": 1});
                app.call_as(&token, Method::POST, "/api/v1/vms", Some(body))
                    .await
            }
        });
        let path = format!("/api/v1/users/{id}");
        let delete = app.call(Method::DELETE, &path, None);
        let (created, deleted) = tokio::join!(futures::future::join_all(creates), delete);
        let made = created
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        if deleted.0 == StatusCode::OK {
            assert_eq!(made, 0, "the delete won, yet VMs were made: {created:?}");
        } else {
            assert_eq!(deleted.0, StatusCode::CONFLICT, "{deleted:?}");
            assert_eq!(deleted.1["error"]["code"], "USER_HAS_VMS", "{deleted:?}");
        }
        for (status, body) in &created {
            assert!(
                [
                    StatusCode::CREATED,
                    StatusCode::NOT_FOUND,
                    StatusCode::UNAUTHORIZED
                ]
                .contains(status),
                "{status} {body}"
            );
        }
        no_vm_is_orphaned(&app).await;
    }
}

#[actix_rt::test]
async fn a_hand_over_to_a_user_deleted_at_the_same_time_is_refused() {
    let app = spawn_app().await;
    for round in 0..4 {
        let giver = app.create_user(&format!("giver{round}")).await;
        let heir = app.create_user(&format!("heir{round}")).await;
        let (giver_id, heir_id) = (user_id(&app, &giver).await, user_id(&app, &heir).await);
        for n in 0..2 {
            let body = json!({"name": format!("g{round}-{n}"), "cpu": 1, "memory": 128, "disk": 1});
            let (status, answer) = app
                .call_as(&giver, Method::POST, "/api/v1/vms", Some(body))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
        let (giver_path, heir_path) = (
            format!("/api/v1/users/{giver_id}?transferTo={heir_id}"),
            format!("/api/v1/users/{heir_id}"),
        );
        let hand_over = app.call(Method::DELETE, &giver_path, None);
        let delete_heir = app.call(Method::DELETE, &heir_path, None);
        let (handed, deleted): ((StatusCode, Value), (StatusCode, Value)) =
            tokio::join!(hand_over, delete_heir);
        assert!(
            !(handed.0 == StatusCode::OK && deleted.0 == StatusCode::OK),
            "both deletes won: {handed:?} {deleted:?}"
        );
        no_vm_is_orphaned(&app).await;
    }
}

#[actix_rt::test]
async fn two_vms_swapping_names_at_once_get_409s_not_a_deadlock() {
    let app = spawn_app().await;
    let a = app.create_blank("swap-a").await;
    let b = app.create_blank("swap-b").await;
    for _ in 0..5 {
        let (to_b, to_a) = tokio::join!(
            app.patch_vm(&a, json!({"name": "swap-b"})),
            app.patch_vm(&b, json!({"name": "swap-a"})),
        );
        for (status, body) in [&to_b, &to_a] {
            assert_eq!(*status, StatusCode::CONFLICT, "{body}");
            assert_eq!(body["error"]["code"], "VM_NAME_TAKEN", "{body}");
        }
    }
    let (_, got) = app.get_vm(&a).await;
    assert_eq!(got["data"]["name"], "swap-a", "{got}");
}

#[actix_rt::test]
async fn concurrent_creates_of_one_role_id_all_but_one_find_it_taken() {
    let app = spawn_app().await;
    let body = json!({"id": "raced", "name": "Raced", "permissions": ["vm:read"]});
    let creates = (0..8).map(|_| app.call(Method::POST, "/api/v1/roles", Some(body.clone())));
    let answers = futures::future::join_all(creates).await;
    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::CREATED) {
        assert_eq!(*status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "ROLE_EXISTS", "{body}");
    }
}
