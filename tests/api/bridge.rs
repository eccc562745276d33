//! `bridge` networks through the real test guest under TCG: the test makes a host bridge of its
//! own, a server allowed to use it puts an admin's VM on it (the VM's tap device is a port of the
//! bridge, the bridge learns the guest's MAC from its DHCP discovers, and with a lease from a small
//! DHCP server on the bridge the guest's httpd answers the host there), the tap goes with the
//! machine (even one whose name a leftover persistent device held), a missing bridge fails the
//! start naming it, and bad or unauthorised requests are
//! refused (400 naming `network.bridge` or `network.ports`, 403 for a non-admin).

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with};

/// The address the test's DHCP server leases to the guest, on the test bridge's 10.213.0.0/24.
const GUEST_IP: &str = "10.213.0.50";

/// A host bridge made for one test and deleted when it ends, even by a failure.
struct OwnBridge(String);

impl OwnBridge {
    fn new(prefix: &str) -> OwnBridge {
        let name = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        ip(&["link", "add", &name, "type", "bridge"]);
        let bridge = OwnBridge(name);
        ip(&["link", "set", &bridge.0, "up"]);
        bridge
    }
}

impl Drop for OwnBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.0, "type", "bridge"])
            .output();
    }
}

/// A network device the test made, deleted when the test ends if it is still there.
struct OwnDevice(String);

impl Drop for OwnDevice {
    fn drop(&mut self) {
        if exists(&self.0) {
            let _ = Command::new("ip")
                .args(["link", "delete", &self.0])
                .output();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The JSON `program args` prints (`ip -j`, `bridge -j`).
fn json_of(program: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(program).args(args).output().expect("it runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// The interfaces that are ports of `bridge`.
fn ports_of(bridge: &str) -> Vec<String> {
    json_of("ip", &["-j", "link", "show", "master", bridge])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect()
}

/// The MAC addresses `bridge` has learned on its ports.
fn learned_macs(bridge: &str) -> Vec<String> {
    json_of("bridge", &["-j", "fdb", "show", "br", bridge])
        .iter()
        .filter_map(|e| e["mac"].as_str().map(str::to_lowercase))
        .collect()
}

fn exists(interface: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(interface)
        .exists()
}

/// A DHCP server of four messages, enough for the guest's udhcpc: on the host's `server` address
/// (the bridge's), it offers and acknowledges `lease` to whoever asks, answering to the subnet's
/// broadcast address (the guest has no address yet, and a limited broadcast would leave by the
/// host's default route instead of the bridge).
async fn dhcp_server(server: [u8; 4], lease: [u8; 4], broadcast: [u8; 4]) {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:67")
        .await
        .expect("port 67");
    socket.set_broadcast(true).expect("broadcast");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, _)) = socket.recv_from(&mut buf).await {
            let request = &buf[..n];
            // BOOTREQUEST, Ethernet, the magic cookie, then the message type option.
            if n < 240 || request[0] != 1 || request[236..240] != [99, 130, 83, 99] {
                continue;
            }
            let kind = dhcp_option(&request[240..], 53).and_then(|v| v.first().copied());
            let answer = match kind {
                Some(1) => 2, // DISCOVER → OFFER
                Some(3) => 5, // REQUEST → ACK
                _ => continue,
            };
            let mut reply = vec![0u8; 240];
            reply[..4].copy_from_slice(&[2, 1, 6, 0]);
            reply[4..8].copy_from_slice(&request[4..8]); // xid
            reply[10..12].copy_from_slice(&request[10..12]); // flags
            reply[16..20].copy_from_slice(&lease); // yiaddr
            reply[20..24].copy_from_slice(&server); // siaddr
            reply[28..44].copy_from_slice(&request[28..44]); // chaddr
            reply[236..240].copy_from_slice(&[99, 130, 83, 99]);
            reply.extend_from_slice(&[53, 1, answer]);
            reply.extend_from_slice(&[54, 4]);
            reply.extend_from_slice(&server);
            reply.extend_from_slice(&[51, 4, 0, 0, 14, 16]); // an hour
            reply.extend_from_slice(&[1, 4, 255, 255, 255, 0]);
            reply.push(255);
            let to = std::net::SocketAddr::from((broadcast, 68));
            let _ = socket.send_to(&reply, to).await;
        }
    });
}

/// The value of option `code` among DHCP `options`.
fn dhcp_option(mut options: &[u8], code: u8) -> Option<&[u8]> {
    while let [c, rest @ ..] = options {
        match *c {
            255 => return None,
            0 => options = rest,
            _ => {
                let len = usize::from(*rest.first()?);
                let value = rest.get(1..1 + len)?;
                if *c == code {
                    return Some(value);
                }
                options = &rest[1 + len..];
            }
        }
    }
    None
}

fn vm(name: &str, network: Value) -> Value {
    json!({"name": name, "cpu": 1, "memory": 128, "disk": 1, "os": "busybox", "network": network})
}

#[tokio::test]
async fn a_bridged_guest_is_on_the_bridge_and_its_tap_goes_with_it() {
    let bridge = OwnBridge::new("vvtb");
    ip(&["addr", "add", "10.213.0.1/24", "dev", &bridge.0]);
    dhcp_server([10, 213, 0, 1], [10, 213, 0, 50], [10, 213, 0, 255]).await;
    let missing = format!("vvtm{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let allowed = vec![bridge.0.clone(), missing.clone()];
    let app = spawn_app_with(|s| s.network.bridges = allowed).await;

    let user = app.create_user("bridger").await;
    let (status, body) = app
        .call_as(
            &user,
            Method::POST,
            "/api/v1/vms",
            Some(vm("mine", json!({"mode": "bridge"}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "FORBIDDEN", "{body}");
    for (network, field) in [
        (
            json!({"mode": "bridge", "bridge": "br-elsewhere"}),
            "network.bridge",
        ),
        (
            json!({"mode": "bridge", "ports": [{"guest": 80}]}),
            "network.ports",
        ),
        (
            json!({"mode": "user", "bridge": bridge.0.as_str()}),
            "network.bridge",
        ),
    ] {
        let (status, body) = app.create_vm(vm("bad", network.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{network}: {body}");
        assert_eq!(body["error"]["field"], field, "{network}: {body}");
    }

    // Without a name, the first configured bridge.
    let (status, body) = app.create_vm(vm("lan", json!({"mode": "bridge"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().expect("an id").to_string();
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let network = &body["data"]["network"];
    assert_eq!(network["mode"], "bridge", "{network}");
    assert_eq!(network["bridge"], bridge.0.as_str(), "{network}");
    assert_eq!(network["ports"], json!([]), "{network}");
    let mac = network["mac"].as_str().expect("a MAC").to_string();
    let tap = network["tap"].as_str().expect("a tap").to_string();

    // A persistent device of the tap's name (as a crash of an older layout or a hand could leave)
    // does not stop the start: it is replaced by QEMU's own, which goes with the machine.
    ip(&["tuntap", "add", "dev", &tap, "mode", "tap"]);
    let _leftover = OwnDevice(tap.clone());
    app.act_and_wait(&id, "start", None).await;
    assert_eq!(
        ports_of(&bridge.0),
        std::slice::from_ref(&tap),
        "the tap is the bridge's port"
    );
    // udhcpc sends discovers from the guest's NIC as soon as it is up; the bridge learns its MAC.
    eventually(90, "the bridge learns the guest's MAC", || {
        learned_macs(&bridge.0).contains(&mac)
    })
    .await;
    // With a lease from the bridge's network, the guest's httpd answers on it.
    let guest = format!("http://{GUEST_IP}/");
    let answer = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("a client");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let last = match answer.get(&guest).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        if last.contains("VOIDVM-GUEST-HTTP") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the guest did not answer on {guest}: {last}; console: {}",
            app.serial_log(&id)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

    // A user's change of the network to a bridge is refused too; a running VM's change of mode
    // needs a restart.
    let (status, body) = app
        .patch_vm(&id, json!({"network": {"mode": "user"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["requiresRestart"], true, "{body}");
    let (status, body) = app
        .patch_vm(&id, json!({"network": {"mode": "bridge"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    app.act_and_wait(&id, "stop", Some(json!({"force": true})))
        .await;
    eventually(10, "the tap goes with its machine", || !exists(&tap)).await;
    assert!(ports_of(&bridge.0).is_empty());

    // A configured bridge that is not on the host fails the start at once, naming it.
    let (status, body) = app
        .create_vm(vm(
            "nowhere",
            json!({"mode": "bridge", "bridge": missing.as_str()}),
        ))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let other = body["data"]["id"].as_str().expect("an id").to_string();
    app.wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    let (status, body) = app.vm_action(&other, "start", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let job = app
        .wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains(&missing), "{job}");
    assert!(app.pid_of(&other).is_none());

    let (status, body) = app.delete_vm(&id).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_job(body["data"]["jobId"].as_str().expect("a job"))
        .await;
    assert!(!exists(&tap));
}
