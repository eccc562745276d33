//! Login, tokens and who may see what.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, JWT_SECRET};

#[actix_rt::test]
async fn login_answers_as_the_seed_snippet_reads_it() {
    let app = spawn_app().await;
    let (status, body) = app.login("admin", "admin123").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["success"], true);
    // `const { token } = await response.json()`
    let token = body["token"].as_str().expect("a top-level token");
    assert_eq!(body["data"]["token"], token);
    assert!(body["data"]["expiresAt"].is_string());
    assert_eq!(body["data"]["user"]["username"], "admin");
    assert_eq!(body["data"]["user"]["role"], "admin");
}

#[actix_rt::test]
async fn a_wrong_password_is_401() {
    let app = spawn_app().await;
    for (u, p) in [("admin", "nope"), ("ghost", "admin123")] {
        let (status, body) = app.login(u, p).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
}

#[actix_rt::test]
async fn calls_without_a_valid_token_are_401() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/api/v1/vms")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");

    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "user-x", "name": "x", "role": "admin", "exp": 4_000_000_000u64, "iat": 0, "jti": "j"}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret-not-the-server"),
    )
    .unwrap();
    let (status, body) = app.call_as(&forged, Method::GET, "/api/v1/vms", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // The scheme in any case; but two Authorization fields, a good one among them, are refused:
    // which one a proxy in front checked is not known.
    let me = app.url("/api/v1/auth/me");
    let lower = app
        .client
        .get(&me)
        .header("Authorization", format!("bearer {}", app.token))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), StatusCode::OK);
    for (first, second) in [
        (
            format!("Bearer {}", app.token),
            "Bearer garbage".to_string(),
        ),
        (
            "Bearer garbage".to_string(),
            format!("Bearer {}", app.token),
        ),
        (
            format!("Bearer {}", app.token),
            format!("Bearer {}", app.token),
        ),
    ] {
        let resp = app
            .client
            .get(&me)
            .header("Authorization", first)
            .header("Authorization", second)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "user-x", "name": "x", "role": "admin", "exp": 1_000, "iat": 0, "jti": "j"}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = app
        .call_as(&expired, Method::GET, "/api/v1/vms", None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body["error"]["details"]
        .as_str()
        .unwrap()
        .contains("expired"));

    // Signed with the server's key, but not as the server signs: a lifetime past the configured
    // one, or valid only later. Refused, should the key ever leak.
    let now = chrono::Utc::now().timestamp();
    let me = app.me().await.1["data"]["id"].as_str().unwrap().to_string();
    for claims in [
        json!({"sub": me, "name": "admin", "role": "admin", "iat": now, "exp": now + 3_153_600_000_i64, "jti": "j1"}),
        json!({"sub": me, "name": "admin", "role": "admin", "iat": now, "nbf": now + 600, "exp": now + 1_200, "jti": "j2"}),
        json!({"sub": me, "name": "admin", "role": "admin", "iat": now + 600, "exp": now + 1_200, "jti": "j3"}),
    ] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .unwrap();
        let (status, body) = app.call_as(&token, Method::GET, "/api/v1/vms", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{claims}: {body}");
    }
}

#[actix_rt::test]
async fn me_names_the_caller_and_logout_ends_the_token() {
    let app = spawn_app().await;
    let (status, body) = app.me().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["username"], "admin");
    let (status, _) = app.call(Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.me().await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[actix_rt::test]
async fn a_password_change_takes_effect() {
    let app = spawn_app().await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"currentPassword": "admin123", "newPassword": "a-better-one"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.login("admin", "admin123").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("admin", "a-better-one").await.0, StatusCode::OK);
}

#[actix_rt::test]
async fn a_user_cannot_see_or_touch_another_users_vm() {
    let app = spawn_app().await;
    let alice = app.create_user("alice").await;
    let bob = app.create_user("bob").await;
    let (status, body) = app
        .call_as(
            &alice,
            Method::POST,
            "/api/v1/vms",
            Some(json!({"name": "mine", "cpu": 1, "memory": 128, "disk": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(body["data"]["owner"], "alice");

    let (status, _) = app
        .call_as(&bob, Method::GET, &format!("/api/v1/vms/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .call_as(&bob, Method::POST, &format!("/api/v1/vms/{id}/start"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.call_as(&bob, Method::GET, "/api/v1/vms", None).await;
    assert_eq!(list["data"]["pagination"]["total"], 0, "{list}");
    let (status, _) = app
        .call_as(&bob, Method::GET, "/api/v1/vms?owner=alice", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The same name is free for another owner.
    let (status, body) = app
        .call_as(
            &bob,
            Method::POST,
            "/api/v1/vms",
            Some(json!({"name": "mine", "cpu": 1, "memory": 128, "disk": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The admin sees both and can filter by owner.
    let (_, list) = app.list_vms("?owner=alice").await;
    assert_eq!(list["data"]["pagination"]["total"], 1, "{list}");
    let (_, list) = app.list_vms("").await;
    assert_eq!(list["data"]["pagination"]["total"], 2, "{list}");
}
