//! An image delete cut short by a crash is finished at the next start, under the image's lock:
//! a directory set aside whose delete never committed goes back under its name (the image is
//! whole again), one whose `ImageDeleted` committed is removed.

use reqwest::{Method, StatusCode};

use crate::helpers::{spawn_server, Env};
use crate::images::{image, Images};

const ASIDE_ID: &str = "0123456789abcdef0123456789abcdef";

#[actix_rt::test]
async fn a_delete_cut_short_is_undone_or_finished_at_the_next_start() {
    let images = Images::new();
    let mut env = Env::new().await;
    env.extra_vars = vec![("VOIDVM_IMAGES_DIR".into(), images.dir.display().to_string())];
    let mut app = spawn_server(env).await;
    let iso = crate::images::fake_iso();
    for name in ["kept", "gone"] {
        let resp = app
            .client
            .put(app.url(&format!("/api/v1/images/{name}/upload?kind=iso")))
            .bearer_auth(&app.token)
            .body(iso.clone())
            .send()
            .await
            .expect("the upload");
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let (status, _) = app.call(Method::DELETE, "/api/v1/images/gone", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.kill_server();

    // As a crash leaves them: "kept" set aside by a delete that never committed, and files of
    // "gone" set aside by a delete that committed but did not remove them.
    let kept_aside = images.dir.join(format!(".deleted-kept-{ASIDE_ID}"));
    std::fs::rename(images.dir.join("kept"), &kept_aside).expect("set aside");
    let gone_aside = images.dir.join(format!(".deleted-gone-{ASIDE_ID}"));
    std::fs::create_dir(&gone_aside).expect("a dir");
    std::fs::write(gone_aside.join("image.iso"), &iso).expect("its file");

    app.restart_server().await;
    assert_eq!(images.entries(), vec!["kept"], "one put back, one removed");
    let (status, got) = image(&app, "kept").await;
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(got["data"]["status"], "ready", "{got}");
    let (status, got) = image(&app, "gone").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{got}");
}
