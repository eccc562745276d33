//! Cancelling an image import: a running download stops, nothing of it stays on disk, the image
//! is `failed` with its name free again, and the log says who cancelled it; a queued import is
//! cancelled before any worker takes it; an import that ended cannot be cancelled.

use std::collections::HashMap;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with};
use crate::images::{app_with, image, import, import_and_wait, kernel, FileServer, Images};

async fn cancel(app: &crate::helpers::TestApp, job_id: &str) -> (StatusCode, Value) {
    app.call(Method::POST, &format!("/api/v1/jobs/{job_id}/cancel"), None)
        .await
}

fn job_id(answer: &Value) -> String {
    answer["data"]["job"]["id"]
        .as_str()
        .expect("the import's job id")
        .to_string()
}

#[tokio::test]
async fn a_running_import_stops_when_cancelled_leaves_nothing_and_frees_its_name() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;
    server.stall(true);
    let body = json!({"name": "halfway", "url": server.url("/file/vmlinuz"), "kind": "kernel"});
    let (status, answer) = import(&app, body.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = job_id(&answer);
    let download = images
        .dir
        .join(format!(".staging-import-{job_id}/download"));
    let half = (bytes.len() / 2) as u64;
    eventually(30, "half the image received", || {
        std::fs::metadata(&download).is_ok_and(|m| m.len() == half)
    })
    .await;

    let (status, answer) = cancel(&app, &job_id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["status"], "cancelled", "{answer}");
    let (_, got) = image(&app, "halfway").await;
    assert_eq!(got["data"]["status"], "failed", "{got}");
    assert_eq!(got["data"]["error"], "The import was cancelled.", "{got}");

    // The worker stops its download and removes what it received.
    eventually(15, "the staging directory is gone", || {
        images.entries().is_empty()
    })
    .await;
    let (_, job) = app
        .call(Method::GET, &format!("/api/v1/jobs/{job_id}"), None)
        .await;
    assert_eq!(
        job["data"]["status"], "cancelled",
        "the worker left it: {job}"
    );
    let (_, got) = image(&app, "halfway").await;
    assert_eq!(got["data"]["status"], "failed", "{got}");

    let (status, again) = cancel(&app, &job_id).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "JOB_NOT_CANCELLABLE", "{again}");

    let (_, events) = app
        .call(
            Method::GET,
            "/api/v1/events?streamType=image&type=ImageImportCancelled",
            None,
        )
        .await;
    let entries = events["data"]["items"].as_array().expect("events");
    assert_eq!(entries.len(), 1, "{events}");
    assert_eq!(entries[0]["streamId"], "halfway", "{events}");
    assert_eq!(entries[0]["data"]["jobId"], job_id.as_str(), "{events}");
    assert_eq!(entries[0]["actor"]["name"], "admin", "{events}");
    assert_eq!(entries[0]["jobId"], job_id.as_str(), "{events}");

    // The name is free: the same import, now served whole, installs.
    server.stall(false);
    let job = import_and_wait(&app, body).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(images.entries(), vec!["halfway"]);
    let second = job["id"].as_str().expect("a job id");
    let (status, ended) = cancel(&app, second).await;
    assert_eq!(status, StatusCode::CONFLICT, "{ended}");
    assert_eq!(ended["error"]["code"], "JOB_NOT_CANCELLABLE", "{ended}");
    let (_, got) = image(&app, "halfway").await;
    assert_eq!(got["data"]["status"], "ready", "{got}");
}

#[tokio::test]
async fn a_queued_import_is_cancelled_before_a_worker_takes_it() {
    // An API node: nothing takes the job.
    let app = spawn_app_with(|s| s.workers = 0).await;
    let (status, answer) = import(
        &app,
        json!({"name": "never", "url": "http://127.0.0.1:9/never", "kind": "iso"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = job_id(&answer);
    assert_eq!(answer["data"]["job"]["status"], "queued", "{answer}");

    let (status, answer) = cancel(&app, &job_id).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["status"], "cancelled", "{answer}");
    let (_, got) = image(&app, "never").await;
    assert_eq!(got["data"]["status"], "failed", "{got}");

    // Another user does not see it, so cannot cancel it.
    let other = app.create_user("notmine").await;
    let (status, answer) = app
        .call_as(
            &other,
            Method::POST,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}
