//! `voidvm vm create` and `vm update` with cloud-init from a file and flags, and `vm iso` /
//! `vm eject` with `--wait`, run as the built binary against a real server: what the API shows
//! afterwards is what the flags said, and the server's refusals reach the exit status.

use serde_json::json;

use crate::cli::Terminal;
use crate::images::{app_with, Images};

#[actix_rt::test]
async fn cloud_init_and_the_cd_rom_are_set_from_the_command_line() {
    // An images dir of the test's own, for the ISO it uploads.
    let images = Images::new();
    let app = app_with(&images).await;
    let term = Terminal::new(&app);
    term.login().await;
    let keys = term.home.join("id.pub");
    std::fs::write(
        &keys,
        "# the team\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1 alice@laptop\n",
    )
    .expect("a key file");
    let base = term.home.join("cloud.json");
    std::fs::write(&base, r#"{"networkConfig": "version: 2\n"}"#).expect("a cloudInit file");

    let created = term
        .run(&[
            "vm",
            "create",
            "--name",
            "seeded",
            "--cpu",
            "1",
            "--memory",
            "128",
            "--disk",
            "1",
            "--os",
            "busybox",
            "--cloud-init",
            base.to_str().expect("a UTF-8 path"),
            "--hostname",
            "seeded-host",
            "--user",
            "alice",
            "--ssh-key",
            keys.to_str().expect("a UTF-8 path"),
            "--wait",
            "--json",
        ])
        .await
        .ok()
        .json();
    let cloud = &created["cloudInit"];
    assert_eq!(cloud["hostname"], "seeded-host", "{created}");
    assert_eq!(cloud["networkConfig"], "version: 2\n", "{created}");
    assert_eq!(cloud["users"][0]["name"], "alice", "{created}");
    assert_eq!(
        cloud["users"][0]["sshAuthorizedKeys"],
        json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH1 alice@laptop"]),
        "{created}"
    );
    let id = created["id"].as_str().expect("an id").to_string();

    // user-data replaces the settings as a whole.
    let data = term.home.join("user-data");
    std::fs::write(&data, "#cloud-config\nruncmd: [\"true\"]\n").expect("user data");
    let changed = term
        .run(&[
            "vm",
            "update",
            "seeded",
            "--memory",
            "192",
            "--user-data",
            data.to_str().expect("a UTF-8 path"),
            "--json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(changed["requiresRestart"], false, "{changed}");
    assert_eq!(changed["vm"]["memory"], 192, "{changed}");
    assert_eq!(changed["vm"]["cloudInit"]["userDataSet"], true, "{changed}");
    assert!(
        changed["vm"]["cloudInit"]["hostname"].is_null(),
        "{changed}"
    );

    // The server's refusal names the field and is exit status 1; nothing to change is usage (2).
    let both = term
        .run(&[
            "vm",
            "update",
            &id,
            "--user-data",
            data.to_str().expect("a UTF-8 path"),
            "--user",
            "bob",
            "--ssh-key",
            keys.to_str().expect("a UTF-8 path"),
        ])
        .await;
    assert_eq!(both.code, 1, "{}", both.stderr);
    assert!(
        both.stderr.contains("cloudInit.userData"),
        "{}",
        both.stderr
    );
    let nothing = term.run(&["vm", "update", &id]).await;
    assert_eq!(nothing.code, 2, "{}", nothing.stderr);

    // An ISO goes in and comes out; the VM is stopped, so the change is only recorded.
    let iso = crate::images::fake_iso();
    let file = term.home.join("tools.iso");
    std::fs::write(&file, &iso).expect("an ISO file");
    term.run(&[
        "images",
        "upload",
        "cli-tools",
        file.to_str().expect("a UTF-8 path"),
        "--kind",
        "iso",
    ])
    .await
    .ok();
    let inserted = term
        .run(&["vm", "iso", "seeded", "cli-tools", "--wait", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(inserted["iso"], "cli-tools", "{inserted}");
    let table = term.run(&["vm", "get", &id]).await.ok();
    assert!(table.stdout.contains("cli-tools"), "{}", table.stdout);
    let ejected = term
        .run(&["vm", "eject", &id, "--wait", "--json"])
        .await
        .ok()
        .json();
    assert!(ejected["iso"].is_null(), "{ejected}");
    let unknown = term.run(&["vm", "iso", &id, "no-such-image"]).await;
    assert_eq!(unknown.code, 4, "{}", unknown.stderr);
}
