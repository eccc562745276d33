//! VM networks through the real test guest under TCG: a forwarded host port reaches the guest's
//! httpd, the guest reaches a server on the host through the NAT, host ports are reserved per VM
//! (409 `PORT_TAKEN`) and freed by a delete, bad input names its field, and `none` has no NIC.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{eventually, spawn_app_with, TestApp};

/// A port range of this test's own, so tests running in parallel (each on its own database)
/// never give two machines the same host port. Below the kernel's ephemeral range (32768 and
/// up), where an outgoing connection's local end could hold the port QEMU must bind.
fn own_range() -> (u16, u16) {
    let n = u16::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..2]
            .try_into()
            .expect("two bytes"),
    );
    let start = 20_000 + (n % 127) * 100;
    (start, start + 99)
}

async fn app_with_range() -> (TestApp, u16, u16) {
    let (start, end) = own_range();
    let app = spawn_app_with(|s| {
        s.network = voidvm::config::NetworkSettings {
            port_range_start: start,
            port_range_end: end,
            ..Default::default()
        };
    })
    .await;
    (app, start, end)
}

/// Creates a test guest with `network` and waits for its provisioning.
async fn create_with_network(app: &TestApp, name: &str, network: Value) -> (String, Value) {
    let (status, body) = app
        .create_vm(
            json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "network": network}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let id = body["data"]["id"].as_str().expect("an id").to_string();
    (id, body["data"]["network"].clone())
}

fn cmdline_of(app: &TestApp, id: &str) -> String {
    let pid = app.pid_of(id).expect("QEMU runs");
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// GET `url` until its body holds `marker`, up to `secs` (the guest boots slowly under TCG).
async fn fetch_until(url: &str, marker: &str, secs: u64) -> String {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let last = match client.get(url).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if last.contains(marker) {
            return last;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} did not answer with {marker} within {secs} s (last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A one-page HTTP server on the host's loopback, answering `body` to every request; returns its
/// port and a counter of the requests it answered.
async fn host_server(body: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (port, served)
}

#[tokio::test]
async fn a_forwarded_port_reaches_the_guest_and_the_guest_reaches_the_host() {
    let (app, start, end) = app_with_range().await;
    let (id, network) = create_with_network(&app, "web", json!({"ports": [{"guest": 80}]})).await;
    assert_eq!(network["mode"], "user", "{network}");
    let host = network["ports"][0]["host"].as_u64().expect("a host port");
    assert!(
        (u64::from(start)..=u64::from(end)).contains(&host),
        "{host}"
    );
    assert_eq!(network["ports"][0]["protocol"], "tcp");
    let (_, got) = app.get_vm(&id).await;
    assert_eq!(
        got["data"]["network"], network,
        "GET shows the same network"
    );
    let mac = network["mac"].as_str().expect("a MAC").to_string();
    assert!(mac.starts_with("52:54:00:"), "{mac}");

    app.act_and_wait(&id, "start", None).await;
    let cmdline = cmdline_of(&app, &id);
    assert!(
        cmdline.contains(&format!("hostfwd=tcp::{host}-:80")),
        "{cmdline}"
    );
    assert!(cmdline.contains(&format!("mac={mac}")), "{cmdline}");

    // The host reaches the guest's httpd through the forwarded port.
    let page = fetch_until(
        &format!("http://127.0.0.1:{host}/"),
        "VOIDVM-GUEST-HTTP voidvm-guest",
        180,
    )
    .await;
    assert!(page.contains("voidvm-guest"), "{page}");

    // The guest got its lease from user-mode NAT's DHCP server, which is the host (10.0.2.2)...
    eventually(120, "the guest's DHCP lease", || {
        app.serial_log(&id)
            .contains("VOIDVM-GUEST-NET eth0 10.0.2.15")
    })
    .await;
    let log = app.serial_log(&id);
    assert!(log.contains("router 10.0.2.2"), "{log}");
    // ...and fetches a page from a server on the host through the NAT, typed on its console.
    let marker = format!("VOIDVM-HOST-PAGE-{}", uuid::Uuid::new_v4().simple());
    let (port, served) = host_server(marker.clone()).await;
    let console = app.env.data_dir.join("vms").join(&id).join("console.sock");
    let mut tty = tokio::net::UnixStream::connect(&console)
        .await
        .expect("the serial console");
    // Split so that the typed command line, echoed on the console, never holds the marker itself.
    let command = format!("echo GOT-$(wget -q -O - http://10.0.2.2:{port}/)\n");
    tty.write_all(command.as_bytes()).await.expect("typed");
    let want = format!("GOT-{marker}");
    eventually(60, "the guest's fetch from the host", || {
        app.serial_log(&id).contains(&want)
    })
    .await;
    assert!(served.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A network change on a running VM waits for its next start.
    let (status, patched) = app
        .patch_vm(
            &id,
            json!({"network": {"ports": [{"guest": 80}, {"guest": 22}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["requiresRestart"], true, "{patched}");
    let ports = &patched["data"]["vm"]["network"]["ports"];
    assert_eq!(
        ports[0]["host"], host,
        "port 80 keeps its host port: {ports}"
    );
    assert_ne!(ports[1]["host"], host, "{ports}");
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[tokio::test]
async fn a_host_port_serves_one_vm_until_it_is_deleted() {
    let (app, start, _) = app_with_range().await;
    let taken = start + 5;
    let fwd = json!({"ports": [{"guest": 22, "host": taken}]});
    let (first, network) = create_with_network(&app, "first", fwd.clone()).await;
    assert_eq!(network["ports"][0]["host"], taken);

    let (status, body) = app
        .create_vm(
            json!({"name": "second", "cpu": 1, "memory": 128, "disk": 1, "os": "busybox",
            "network": fwd}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "PORT_TAKEN", "{body}");
    let (_, list) = app.list_vms("").await;
    assert_eq!(
        list["data"]["pagination"]["total"], 1,
        "nothing recorded: {list}"
    );

    // The same number for UDP is another port; a forward without host gets a free one.
    let (other, network) = create_with_network(
        &app,
        "other",
        json!({"ports": [{"guest": 53, "host": taken, "protocol": "udp"}, {"guest": 80}]}),
    )
    .await;
    assert_eq!(network["ports"][0]["host"], taken);
    assert_ne!(network["ports"][1]["host"], taken);
    let (status, body) = app
        .patch_vm(
            &other,
            json!({"network": {"ports": [{"guest": 22, "host": taken}]}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "PORT_TAKEN", "{body}");

    let (status, body) = app.delete_vm(&first).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (second, network) = create_with_network(
        &app,
        "second",
        json!({"ports": [{"guest": 22, "host": taken}]}),
    )
    .await;
    assert_eq!(
        network["ports"][0]["host"], taken,
        "{second} got the freed port"
    );
}

#[tokio::test]
async fn bad_networks_are_refused_naming_the_field() {
    let (app, _, end) = app_with_range().await;
    let cases = [
        (json!({"mode": "bridge", "bridge": "br0"}), "network.bridge"),
        (
            json!({"ports": [{"guest": 80}, {"guest": 0}]}),
            "network.ports[1].guest",
        ),
        (
            json!({"ports": [{"guest": 80, "host": end + 1}]}),
            "network.ports[0].host",
        ),
        (
            json!({"ports": [{"guest": 80}, {"guest": 80}]}),
            "network.ports[1].guest",
        ),
        (
            json!({"mode": "none", "ports": [{"guest": 80}]}),
            "network.ports",
        ),
        (
            json!({"ports": [{"guest": 80, "protocol": "sctp"}]}),
            "network.ports[0].protocol",
        ),
    ];
    for (network, field) in cases {
        let (status, body) = app
            .create_vm(json!({"name": "bad", "cpu": 1, "memory": 128, "disk": 1,
                "os": "busybox", "network": network}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{network}: {body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{body}");
        assert_eq!(body["error"]["field"], field, "{network}: {body}");
    }
    let id = app.create_guest("ok").await;
    let (status, body) = app
        .patch_vm(&id, json!({"network": {"ports": [{"guest": 70000}]}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "network.ports[0].guest", "{body}");
}

#[tokio::test]
async fn mode_none_boots_without_a_nic() {
    let (app, _, _) = app_with_range().await;
    let (id, network) = create_with_network(&app, "dark", json!({"mode": "none"})).await;
    assert_eq!(
        network,
        json!({"mode": "none", "ports": [], "mac": null, "bridge": null, "tap": null}),
        "{network}"
    );
    app.act_and_wait(&id, "start", None).await;
    let cmdline = cmdline_of(&app, &id);
    assert!(!cmdline.contains("-netdev"), "{cmdline}");
    assert!(!cmdline.contains("virtio-net"), "{cmdline}");
    eventually(120, "the guest seeing no NIC", || {
        app.serial_log(&id).contains("VOIDVM-GUEST-NO-NIC")
    })
    .await;
    // A VM with no network says nothing changes at the next start when asked for none again.
    let (status, body) = app
        .patch_vm(&id, json!({"network": {"mode": "none"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["requiresRestart"], false, "{body}");
    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
}

#[tokio::test]
async fn concurrent_creates_choosing_ports_each_get_their_own() {
    let (app, start, end) = app_with_range().await;
    let creates = (0..5).map(|i| {
        app.create_vm(
            json!({"name": format!("race-{i}"), "cpu": 1, "memory": 128, "disk": 1,
            "os": "busybox", "network": {"ports": [{"guest": 80}]}}),
        )
    });
    let mut hosts = std::collections::BTreeSet::new();
    for (status, body) in futures::future::join_all(creates).await {
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let host = body["data"]["network"]["ports"][0]["host"]
            .as_u64()
            .expect("a host port");
        assert!(
            (u64::from(start)..=u64::from(end)).contains(&host),
            "{host}"
        );
        hosts.insert(host);
    }
    assert_eq!(hosts.len(), 5, "each VM got its own host port: {hosts:?}");
}
