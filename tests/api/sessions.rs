//! Tokens checked from each node's cache, kept current by PostgreSQL notifications: a logout, a
//! password change and a deleted user are refused by every node sharing the database (two apps
//! here), open WebSockets of an ended token close, and the cache reloads after its listener was
//! cut off.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, spawn_second_node, TestApp, JWT_SECRET};

/// `GET /auth/me` on the node at `address` with `token`: status and body.
async fn me_on(app: &TestApp, address: &str, token: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .get(format!("{address}/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .expect("the request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls until `token` is refused on the node at `address`; returns the refusal's details. No
/// cache entry expires on its own, so only a notification can make this happen.
async fn refused_on(app: &TestApp, address: &str, token: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = me_on(app, address, token).await;
        if status == StatusCode::UNAUTHORIZED {
            return body["error"]["details"].as_str().unwrap_or("").to_string();
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pool(app: &TestApp) -> sqlx::PgPool {
    sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database")
}

#[actix_rt::test]
async fn a_logout_is_refused_on_every_node() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app).await;
    let token = app.login_token("admin", "admin123").await;
    assert_eq!(me_on(&app, &other, &token).await.0, StatusCode::OK);
    assert_eq!(me_on(&app, &app.address, &token).await.0, StatusCode::OK);
    let (status, body) = app
        .call_as(&token, Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The node that logged out knows at once; the other hears it from PostgreSQL.
    let (status, body) = me_on(&app, &app.address, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(refused_on(&app, &other, &token).await.contains("revoked"));
    // Other tokens of the same user are untouched.
    assert_eq!(me_on(&app, &other, &app.token).await.0, StatusCode::OK);
}

/// A WebSocket on the node at `address`, past its `authenticated` frame.
async fn ws_on(
    address: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/ws?token={token}", address.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("the WebSocket");
    let hello = ws.next().await.expect("a frame").expect("a frame");
    assert!(
        hello.to_text().unwrap_or("").contains("authenticated"),
        "{hello}"
    );
    ws
}

/// The close frame's code and reason, skipping other frames; fails after 30 s.
async fn close_of(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the connection was not closed within 30 s");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string())
            }
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (0, String::new()),
            Some(Ok(_)) => continue,
        }
    }
}

#[actix_rt::test]
async fn a_password_change_ends_older_tokens_and_their_websockets_on_every_node() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app).await;
    let first = app.create_user("alice").await;
    let second = app.login_token("alice", "password1").await;
    assert_eq!(me_on(&app, &other, &first).await.0, StatusCode::OK);
    assert_eq!(me_on(&app, &other, &second).await.0, StatusCode::OK);
    let mut here = ws_on(&app.address, &second).await;
    let mut there = ws_on(&other, &first).await;

    let (status, body) = app
        .call_as(
            &first,
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"currentPassword": "password1", "newPassword": "a-new-one-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for token in [&first, &second] {
        let (status, body) = me_on(&app, &app.address, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert!(refused_on(&app, &other, token).await.contains("password"));
    }
    for ws in [&mut here, &mut there] {
        let (code, reason) = close_of(ws).await;
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("token revoked"), "{reason}");
    }
    // A token from the new password works everywhere, and the admin was never affected.
    let third = app.login_token("alice", "a-new-one-1").await;
    assert_eq!(me_on(&app, &other, &third).await.0, StatusCode::OK);
    assert_eq!(me_on(&app, &other, &app.token).await.0, StatusCode::OK);

    // A user deleted (here straight in the database) is refused by both nodes.
    sqlx::query("DELETE FROM users WHERE username = 'alice'")
        .execute(&pool(&app).await)
        .await
        .expect("the delete");
    assert!(refused_on(&app, &app.address, &third)
        .await
        .contains("no longer exists"));
    assert!(refused_on(&app, &other, &third)
        .await
        .contains("no longer exists"));
}

#[actix_rt::test]
async fn a_role_change_closes_the_users_websockets_on_every_node() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app).await;
    let (status, frank) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "frank", "password": "password1", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{frank}");
    let token = app.login_token("frank", "password1").await;
    let alice = app.create_user("alice").await;
    let mut here = ws_on(&app.address, &token).await;
    let mut there = ws_on(&other, &token).await;
    let mut bystander = ws_on(&other, &alice).await;

    let (status, body) = app
        .call(
            Method::PUT,
            &format!(
                "/api/v1/users/{}",
                frank["data"]["id"].as_str().expect("an id")
            ),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for ws in [&mut here, &mut there] {
        let (code, reason) = close_of(ws).await;
        assert_eq!(code, 1008, "{reason}");
        assert!(reason.contains("role changed to 'user'"), "{reason}");
        // Not a token problem: the SDKs connect again by themselves.
        assert!(!reason.contains("token"), "{reason}");
    }
    // The token still works, with the new role: an administrator's topic is refused.
    let mut again = ws_on(&other, &token).await;
    let ask = json!({"type": "subscribe", "id": "m", "data": {"topic": "system-monitor"}});
    again
        .send(Message::Text(ask.to_string().into()))
        .await
        .expect("sent");
    let answer = answer_to(&mut again, "m").await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert_eq!(answer["data"]["code"], "FORBIDDEN", "{answer}");

    // Another user's connection is untouched: it still answers.
    let ping = json!({"type": "ping", "id": "p"});
    bystander
        .send(Message::Text(ping.to_string().into()))
        .await
        .expect("sent");
    assert_eq!(answer_to(&mut bystander, "p").await["type"], "pong");
}

/// The frame answering the client's frame `id`, skipping others.
async fn answer_to(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    id: &str,
) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s")
            .expect("the connection is open")
            .expect("a frame");
        let frame: Value = serde_json::from_str(msg.to_text().unwrap_or("")).unwrap_or_default();
        if frame["id"] == id {
            return frame;
        }
    }
}

/// Ends the auth cache listeners' connections; returns how many there were.
async fn cut_listeners(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %voidvm_auth%'",
    )
    .fetch_one(pool)
    .await
    .expect("the listeners")
}

async fn listeners(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %voidvm_auth%'",
    )
    .fetch_one(pool)
    .await
    .expect("the listeners")
}

#[actix_rt::test]
async fn a_revocation_made_while_the_listener_is_away_is_not_missed() {
    let app = spawn_app().await;
    let other = spawn_second_node(&app).await;
    let pool = pool(&app).await;
    let token = app.login_token("admin", "admin123").await;
    assert_eq!(me_on(&app, &other, &token).await.0, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while listeners(&pool).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes do not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cut_listeners(&pool).await, 2);
    // Revoked behind both nodes' backs, while their listeners are away.
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at)
         SELECT $1, now() + interval '1 hour'",
    )
    .bind(jti_of(&token))
    .execute(&pool)
    .await
    .expect("the revocation");
    assert!(refused_on(&app, &other, &token).await.contains("revoked"));
    assert!(refused_on(&app, &app.address, &token)
        .await
        .contains("revoked"));
    // The listeners come back, and what is revoked from then on still reaches both nodes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while listeners(&pool).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listeners did not come back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = app.login_token("admin", "admin123").await;
    assert_eq!(me_on(&app, &other, &later).await.0, StatusCode::OK);
    assert_eq!(
        me_on(&app, &other, &token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .call_as(&later, Method::POST, "/api/v1/auth/logout", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(refused_on(&app, &other, &later).await.contains("revoked"));
}

/// The `jti` claim of a token.
fn jti_of(token: &str) -> String {
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .expect("a token of this server");
    claims.claims["jti"].as_str().expect("a jti").to_string()
}
