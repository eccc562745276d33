//! Given/when/then, one test per rule of webhooks: the aggregate's decisions, what a client may
//! send, and how an attempt's answer is judged.

use std::time::Duration;

use super::dispatcher::{backoff, judge};
use super::transport::TransportError;
use super::*;
use crate::config::WebhookSettings;
use crate::store::deliveries::Outcome;

fn given(events: Vec<WebhookEvent>) -> Webhook {
    let mut hook = Webhook::default();
    for e in events {
        hook.apply(e);
    }
    hook
}

fn created() -> WebhookEvent {
    WebhookEvent::WebhookCreated {
        owner_id: "user-1".into(),
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["*".into()],
        active: true,
    }
}

#[test]
fn a_new_webhook_is_created_once() {
    let create = WebhookCommand::Create {
        owner_id: "user-1".into(),
        url: "http://127.0.0.1:9/hook".into(),
        events: vec!["*".into()],
        active: true,
    };
    assert_eq!(given(vec![]).decide(create.clone()), Ok(vec![created()]));
    assert_eq!(
        given(vec![created()]).decide(create),
        Err(WebhookError::AlreadyExists)
    );
}

#[test]
fn a_change_records_only_what_differs() {
    let change = WebhookChange {
        url: Some("http://127.0.0.1:9/hook".into()),
        active: Some(false),
        ..WebhookChange::default()
    };
    assert_eq!(
        given(vec![created()]).decide(WebhookCommand::Change(change)),
        Ok(vec![WebhookEvent::WebhookChanged(WebhookChange {
            active: Some(false),
            ..WebhookChange::default()
        })])
    );
}

#[test]
fn a_change_that_changes_nothing_is_refused() {
    let same = WebhookChange {
        active: Some(true),
        ..WebhookChange::default()
    };
    assert_eq!(
        given(vec![created()]).decide(WebhookCommand::Change(same)),
        Err(WebhookError::NothingToChange)
    );
}

#[test]
fn a_new_secret_is_recorded_as_changed_without_its_value() {
    let change = WebhookChange {
        secret_changed: true,
        ..WebhookChange::default()
    };
    let events = given(vec![created()])
        .decide(WebhookCommand::Change(change))
        .unwrap();
    assert_eq!(
        serde_json::to_value(&events[0]).unwrap(),
        serde_json::json!({"WebhookChanged": {"secretChanged": true}})
    );
}

#[test]
fn a_deleted_webhook_is_gone_for_every_command() {
    let hook = given(vec![created(), WebhookEvent::WebhookDeleted {}]);
    assert_eq!(
        hook.decide(WebhookCommand::Delete),
        Err(WebhookError::NotFound)
    );
    assert_eq!(
        hook.decide(WebhookCommand::Change(WebhookChange {
            active: Some(false),
            ..WebhookChange::default()
        })),
        Err(WebhookError::NotFound)
    );
    assert_eq!(
        hook.decide(WebhookCommand::Redeliver {
            delivery_id: 7,
            position: 42
        }),
        Err(WebhookError::NotFound)
    );
}

#[test]
fn a_redelivery_is_recorded_and_leaves_the_webhook_as_it_was() {
    let mut hook = given(vec![created()]);
    let before = hook.clone();
    let events = hook
        .decide(WebhookCommand::Redeliver {
            delivery_id: 7,
            position: 42,
        })
        .unwrap();
    assert_eq!(
        serde_json::to_value(&events).unwrap(),
        serde_json::json!([{"WebhookDeliveryRequeued": {"deliveryId": 7, "position": 42}}])
    );
    for e in events {
        hook.apply(e);
    }
    assert_eq!(hook, before);
}

#[test]
fn urls_must_be_http_with_a_host_and_no_credentials() {
    assert!(TargetUrl::parse("https://example.com/hooks?x=1").is_ok());
    assert!(TargetUrl::parse("http://127.0.0.1:8080/").is_ok());
    for bad in [
        "ftp://example.com/",
        "example.com/hook",
        "http://user:pw@example.com/",
        "http://example.com/#frag",
        "",
    ] {
        assert!(TargetUrl::parse(bad).is_err(), "{bad} was accepted");
    }
    let long = format!("http://example.com/{}", "a".repeat(3000));
    assert!(TargetUrl::parse(&long).is_err());
}

#[test]
fn event_selections_name_vm_event_types_or_every_one() {
    assert_eq!(EventSelection::parse(&["*"]), Ok(EventSelection::Every));
    let some = EventSelection::parse(&["VmStopped", "VmStarted", "VmStarted"]).unwrap();
    assert_eq!(some.ids(), vec!["VmStarted", "VmStopped"]);
    assert!(some.matches("VmStarted") && !some.matches("VmCreated"));
    assert!(EventSelection::parse::<&str>(&[]).is_err());
    assert!(EventSelection::parse(&["VmFlew"]).is_err());
    // Beside "*" too.
    assert!(EventSelection::parse(&["*", "VmFlew"]).is_err());
    assert_eq!(
        EventSelection::parse(&["*", "VmStarted"]),
        Ok(EventSelection::Every)
    );
    assert!(EventSelection::parse(&["UserCreated"]).is_err());
}

#[test]
fn secrets_are_long_visible_ascii_and_made_when_absent() {
    assert!(Secret::parse("0123456789abcdef").is_ok());
    assert!(Secret::parse("short").is_err());
    assert!(Secret::parse("has a space in it!!").is_err());
    let made = Secret::generate();
    assert!(made.expose().starts_with("whsec_") && made.expose().len() == 6 + 64);
    assert_ne!(made, Secret::generate());
    assert_eq!(format!("{made:?}"), "Secret(..)");
}

fn settings() -> WebhookSettings {
    WebhookSettings {
        max_attempts: 4,
        backoff_base_ms: 100,
        backoff_max_ms: 300,
        ..WebhookSettings::default()
    }
}

#[test]
fn a_2xx_answer_delivers() {
    let a = judge(Ok(204), 1, &settings(), Duration::ZERO);
    assert_eq!(a.outcome, Outcome::Delivered);
    assert_eq!(a.response_status, Some(204));
}

#[test]
fn other_answers_and_no_answer_are_retried_with_a_doubling_wait() {
    let s = settings();
    assert_eq!(
        judge(Ok(500), 1, &s, Duration::ZERO).outcome,
        Outcome::RetryIn(Duration::from_millis(100))
    );
    assert_eq!(
        judge(Ok(302), 2, &s, Duration::ZERO).outcome,
        Outcome::RetryIn(Duration::from_millis(200))
    );
    let timeout = judge(Err(TransportError::Timeout(5)), 3, &s, Duration::ZERO);
    assert_eq!(
        timeout.outcome,
        Outcome::RetryIn(Duration::from_millis(300))
    );
    assert!(timeout.error.unwrap().contains("5 ms"));
    assert_eq!(backoff(40, &s), Duration::from_millis(300));
}

#[test]
fn the_last_attempt_gives_up() {
    assert_eq!(
        judge(Ok(503), 4, &settings(), Duration::ZERO).outcome,
        Outcome::GaveUp
    );
}

#[test]
fn private_addresses_are_told_from_public_ones() {
    use super::target::is_private;
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "::1",
        "fd00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        // IPv4 inside IPv6: compatible, NAT64 (the metadata address), 6to4.
        "::127.0.0.1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::a00:1",
        "2002:7f00:1::1",
        "2002:a00:1::1",
        "198.18.0.1",
        "198.19.255.255",
        "192.0.0.8",
        "240.0.0.1",
        "::",
    ] {
        assert!(is_private(private.parse().unwrap()), "{private}");
    }
    for public in [
        "93.184.216.34",
        "8.8.8.8",
        "2606:4700::1111",
        "100.128.0.1",
        "198.20.0.1",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ] {
        assert!(!is_private(public.parse().unwrap()), "{public}");
    }
}

#[test]
fn a_url_names_its_address_when_it_is_one_or_localhost() {
    let literal = |u: &str| TargetUrl::parse(u).unwrap().literal_address();
    assert_eq!(
        literal("http://10.0.0.5:81/x"),
        Some("10.0.0.5".parse().unwrap())
    );
    assert_eq!(literal("http://[::1]/"), Some("::1".parse().unwrap()));
    assert_eq!(
        literal("http://LOCALHOST/"),
        Some("127.0.0.1".parse().unwrap())
    );
    assert_eq!(literal("https://example.com/"), None);
}
