//! Image imports on the real-time feed: the `images` topic on `/ws` carries every image's events
//! (progress included) with positions that resume, the `jobs` topic carries the import's job to
//! the user who asked for it, and the relay publishes both on NATS under `events.image.` and
//! `jobs.image.`.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::images::{app_with, import, kernel, sha256, FileServer, Images};
use crate::ws_client::{positions, WsClient};

/// Frames until (and with) the `image-event` of type `last`, within 60 s.
async fn frames_until(ws: &mut WsClient, last: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = ws
            .next_within(60)
            .await
            .unwrap_or_else(|| panic!("no {last} within 60 s; got {frames:?}"))
            .unwrap_or_else(|| panic!("the connection closed before {last}; got {frames:?}"));
        let done = frame["type"] == "image-event" && frame["data"]["type"] == last;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

#[tokio::test]
async fn an_import_and_its_progress_are_on_the_feed_and_on_nats() {
    let images = Images::new();
    let app = app_with(&images).await;
    let bytes = kernel();
    let size = bytes.len() as u64;
    let server = FileServer::start(HashMap::from([("vmlinuz".to_string(), bytes.clone())])).await;

    let mut admin = app.ws(&app.token).await;
    admin.subscribe(json!({"topic": "images"})).await;
    admin.subscribe(json!({"topic": "jobs"})).await;
    admin.subscribe(json!({"topic": "vm-status-all"})).await;
    let user_token = app.create_user("ursula").await;
    let mut user = app.ws(&user_token).await;
    user.subscribe(json!({"topic": "images"})).await;
    user.subscribe(json!({"topic": "jobs"})).await;

    let (status, answer) = import(
        &app,
        json!({"name": "fed-kernel", "url": server.url("/file/vmlinuz"), "kind": "kernel",
               "sha256": sha256(&bytes)}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job_id = answer["data"]["job"]["id"]
        .as_str()
        .expect("a job id")
        .to_string();

    // The admin, who asked: every image event and the import's job, and no VM frame.
    let frames = frames_until(&mut admin, "ImageImported").await;
    let events = of_type(&frames, "image-event");
    let types: Vec<&str> = events
        .iter()
        .filter_map(|f| f["data"]["type"].as_str())
        .collect();
    assert_eq!(types.first(), Some(&"ImageImportRequested"), "{types:?}");
    assert_eq!(types.last(), Some(&"ImageImported"), "{types:?}");
    let progress = events
        .iter()
        .rfind(|f| f["data"]["type"] == "ImageImportProgressed")
        .unwrap_or_else(|| panic!("no progress on the feed: {types:?}"));
    assert_eq!(progress["data"]["data"]["bytesDone"], size, "{progress}");
    assert_eq!(progress["data"]["data"]["bytesTotal"], size, "{progress}");
    for event in &events {
        let data = &event["data"];
        assert_eq!(data["streamType"], "image", "{event}");
        assert_eq!(data["streamId"], "fed-kernel", "{event}");
        assert_eq!(data["jobId"], json!(job_id), "{event}");
    }
    assert!(
        of_type(&frames, "vm-status").is_empty(),
        "an image event is not a VM's: {frames:?}"
    );
    let event_positions = positions(&events.iter().map(|f| (*f).clone()).collect::<Vec<_>>());
    assert!(
        event_positions.windows(2).all(|w| w[0] < w[1]),
        "{event_positions:?}"
    );
    // The job's queued update comes with the request; its end may follow the last event's frame.
    let mut jobs: Vec<Value> = of_type(&frames, "job-update")
        .into_iter()
        .cloned()
        .collect();
    if jobs.len() < 2 {
        jobs.push(admin.next_of("job-update").await);
    }
    let summary: Vec<(Value, Value, Value, Value)> = jobs
        .iter()
        .map(|f| {
            let d = &f["data"];
            (
                d["jobId"].clone(),
                d["status"].clone(),
                d["image"].clone(),
                d["vmId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!(job_id),
                json!("queued"),
                json!("fed-kernel"),
                Value::Null
            ),
            (
                json!(job_id),
                json!("succeeded"),
                json!("fed-kernel"),
                Value::Null
            ),
        ]
    );
    assert_eq!(jobs[0]["data"]["kind"], "import_image", "{}", jobs[0]);

    // A user who may read images sees the image's events, but not another user's import job.
    let seen = frames_until(&mut user, "ImageImported").await;
    assert_eq!(
        positions(
            &of_type(&seen, "image-event")
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        ),
        event_positions
    );
    assert!(
        of_type(&seen, "job-update").is_empty(),
        "another user's import job reached a user: {seen:?}"
    );

    // Resuming from before the import replays exactly what came live.
    let mut later = app.ws(&app.token).await;
    let (replay, _) = later
        .subscribe(json!({"topic": "images", "since": 0}))
        .await;
    assert_eq!(positions(&replay), event_positions);

    // NATS: the events under events.image.<name>., the job under jobs.image.<name>.
    let prefix = app.env.nats_prefix.clone();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let published = loop {
        let published = crate::ws_client::stream_events(&app).await;
        if published
            .iter()
            .any(|(subject, _)| subject.ends_with(".ImageImported"))
        {
            break published;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the import's events did not reach NATS within 30 s: {published:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let image_subjects: Vec<&str> = published
        .iter()
        .filter(|(_, body)| body["streamType"] == "image")
        .map(|(subject, _)| subject.as_str())
        .collect();
    assert_eq!(
        image_subjects.len(),
        event_positions.len(),
        "{image_subjects:?}"
    );
    for (subject, ty) in image_subjects.iter().zip(&types) {
        assert_eq!(*subject, format!("{prefix}.events.image.fed-kernel.{ty}"));
    }
    for (_, body) in published.iter().filter(|(_, b)| b["streamType"] == "image") {
        crate::ws_client::assert_schema("feed-event", body);
    }
    let job_subjects: Vec<String> = crate::ws_client::stream_messages(&app, ".jobs.")
        .await
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    assert!(
        job_subjects.contains(&format!("{prefix}.jobs.image.fed-kernel.{job_id}")),
        "{job_subjects:?}"
    );
}
