//! Jobs behind a busy queue: cancelling one that is still queued, and VM actors that stopped
//! while idle coming back with their state.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};

#[actix_rt::test]
async fn a_queued_job_can_be_cancelled_and_the_vm_goes_back() {
    let app = spawn_app().await;
    let (_, body) = app
        .create_vm(json!({"name": "waiter", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    let waiter = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    // A busy queue: new jobs are not due for an hour, so the next one stays queued.
    let db = sqlx::PgPool::connect(&app.env.database_url).await.unwrap();
    sqlx::query("ALTER TABLE jobs ALTER COLUMN run_after SET DEFAULT now() + interval '1 hour'")
        .execute(&db)
        .await
        .unwrap();

    let (status, body) = app.vm_action(&waiter, "start", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job_id = body["data"]["jobId"].as_str().unwrap().to_string();
    assert_eq!(app.get_job(&job_id).await.1["data"]["status"], "queued");

    let (status, body) = app.cancel_job(&job_id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(app.status_of(&waiter).await, "stopped");
    let (_, events) = app.vm_events(&waiter, "").await;
    let last = events["data"]["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "JobCancelled", "{events}");
    // Cancelling twice is a conflict, and the VM takes commands again.
    assert_eq!(app.cancel_job(&job_id).await.0, StatusCode::CONFLICT);
    sqlx::query("ALTER TABLE jobs ALTER COLUMN run_after SET DEFAULT now()")
        .execute(&db)
        .await
        .unwrap();
    app.act_and_wait(&waiter, "start", None).await;
    assert_eq!(app.status_of(&waiter).await, "running");
}

#[actix_rt::test]
async fn a_vm_actor_that_stopped_when_idle_comes_back_with_its_state() {
    let app = spawn_app_with(|s| s.actor_idle_secs = 1).await;
    let (_, body) = app
        .create_vm(json!({"name": "sleepy", "cpu": 1, "memory": 128, "disk": 1}))
        .await;
    let id = body["data"]["id"].as_str().unwrap().to_string();
    app.wait_job(body["data"]["jobId"].as_str().unwrap()).await;
    let (status, _) = app.patch_vm(&id, json!({"cpu": 2})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The rebuilt actor knows the VM is stopped with 2 CPUs: the same change is a no-op and a
    // pause is refused as the state says.
    let (status, body) = app.patch_vm(&id, json!({"cpu": 2})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["message"], "Nothing to change.");
    let (status, body) = app.vm_action(&id, "pause", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "VM_NOT_RUNNING");
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(app.status_of(&id).await, "running");
}

#[actix_rt::test]
async fn a_users_job_list_holds_no_image_import_named_like_one_of_their_vms() {
    let app = spawn_app().await;
    let user = app.create_user("joblister").await;
    let body = json!({"name": "mine", "cpu": 1, "memory": 128, "disk": 1});
    let (status, created) = app
        .call_as(&user, reqwest::Method::POST, "/api/v1/vms", Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let vm_id = created["data"]["id"].as_str().expect("an id").to_string();
    app.wait_job(created["data"]["jobId"].as_str().expect("a job"))
        .await;

    // An administrator's import, under an image name that happens to be the user's VM id; its
    // job keeps the image's name where a VM's job keeps the VM's id.
    let import = json!({"name": vm_id, "url": "http://127.0.0.1:9/x.img", "kind": "disk"});
    let (status, answer) = app
        .call(reqwest::Method::POST, "/api/v1/images", Some(import))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let import_job = answer["data"]["job"]["id"].as_str().expect("a job id");
    app.wait_job(import_job).await;

    let (status, page) = app
        .call_as(&user, reqwest::Method::GET, "/api/v1/jobs", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<(&str, &str)> = page["data"]["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|j| {
            (
                j["kind"].as_str().unwrap_or_default(),
                j["vmId"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(kinds, [("provision", vm_id.as_str())], "{page}");
    assert_eq!(page["data"]["pagination"]["total"], 1, "{page}");
    // The administrator sees both.
    let (_, page) = app.list_jobs("").await;
    assert!(
        page["data"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|j| j["id"] == import_job),
        "{page}"
    );
}
