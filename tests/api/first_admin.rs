//! The default `admin`/`admin123` account is made on a first start only: once an administrator has
//! deleted it, no restart brings that well-known login back.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_server, Env};

#[actix_rt::test]
async fn a_deleted_default_admin_stays_deleted_across_restarts() {
    let mut app = spawn_server(Env::new().await).await;
    let (status, me) = app.me().await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let admin_id = me["data"]["id"]
        .as_str()
        .expect("the admin's id")
        .to_string();

    // A second administrator replaces the default one.
    let root = json!({"username": "root2", "password": "Passw0rd-root2", "role": "admin"});
    let (status, body) = app.call(Method::POST, "/api/v1/users", Some(root)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let root_token = app.login_token("root2", "Passw0rd-root2").await;
    let (status, body) = app
        .call_as(
            &root_token,
            Method::DELETE,
            &format!("/api/v1/users/{admin_id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for _ in 0..2 {
        app.restart_process().await;
        let (status, body) = app.login("admin", "admin123").await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "the default admin came back: {body}"
        );
        let root_token = app.login_token("root2", "Passw0rd-root2").await;
        let (status, users) = app
            .call_as(&root_token, Method::GET, "/api/v1/users", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{users}");
        let names: Vec<&str> = users["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|u| u["username"].as_str())
            .collect();
        assert_eq!(names, ["root2"], "{users}");
    }
}
