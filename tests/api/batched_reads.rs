//! Reads of VM rows by id that arrive together go to PostgreSQL as one query
//! (`store::vm_reads`): each read still gets its own VM (or none), sees every command answered
//! before it, is refused another user's VM, and fails cleanly when the query does.

use std::sync::Arc;

use futures::future::join_all;
use reqwest::{Method, StatusCode};
use voidvm::store::vm_cache::VmCache;
use voidvm::store::vm_reads::VmReads;
use voidvm::store::StoreError;

use crate::helpers::{spawn_app, TestApp};
use crate::solo_reads::{change_then_read, sample, share_the_database};

#[actix_rt::test]
async fn reads_queued_together_take_one_query_and_each_gets_its_own_vm() {
    let app = spawn_app().await;
    let ids = [
        app.create_blank("batch-a").await,
        app.create_blank("batch-b").await,
        app.create_blank("batch-c").await,
    ];
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let cache = Arc::new(VmCache::default());
    let reads = VmReads::new(pool.clone(), cache.clone());
    let missing = "vm-that-does-not-exist".to_string();
    // Text PostgreSQL cannot store fails no one's read but its own.
    let unstorable = "vm-\0".to_string();
    let asked: Vec<&String> = (0..30)
        .map(|n| match n % 10 {
            9 => &missing,
            8 => &unstorable,
            _ => &ids[n % 3],
        })
        .collect();
    // On this single-threaded runtime every read is queued before the batching task first runs.
    let answers = join_all(asked.iter().map(|id| reads.get(id))).await;
    for (id, answer) in asked.iter().zip(answers) {
        let answer = answer.expect("a read");
        if *id == &missing || *id == &unstorable {
            assert!(
                answer.is_none(),
                "a VM that does not exist was found: {answer:?}"
            );
        } else {
            assert_eq!(answer.map(|v| v.id).as_ref(), Some(*id));
        }
    }
    assert_eq!(
        cache.queries(),
        1,
        "30 reads queued together should take one query"
    );
    // A read alone goes out at once, as its own query.
    let alone = reads.get(&ids[0]).await.expect("a read").expect("the VM");
    assert_eq!(alone.id, ids[0]);
    assert_eq!(cache.queries(), 2);
    pool.close().await;
}

#[actix_rt::test]
async fn every_read_of_a_failed_batch_gets_the_error() {
    let app = spawn_app().await;
    let pool = sqlx::PgPool::connect(&app.env.database_url)
        .await
        .expect("the test database");
    let reads = VmReads::new(pool.clone(), Arc::new(VmCache::default()));
    pool.close().await;
    let ids: Vec<String> = (0..5).map(|n| format!("vm-{n}")).collect();
    let answers = join_all(ids.iter().map(|id| reads.get(id))).await;
    for answer in answers {
        assert!(
            matches!(answer, Err(StoreError::Unavailable(_))),
            "a read on a closed pool answered {answer:?}"
        );
    }
}

#[actix_rt::test]
async fn concurrent_readers_on_a_shared_database_see_their_own_commands_and_only_their_vms() {
    let app = spawn_app().await;
    let other_token = app.create_user("batch-reader").await;
    let mut ids = Vec::new();
    for n in 0..8 {
        ids.push(app.create_blank(&format!("shared-{n}")).await);
    }
    let _other_node = share_the_database(&app).await;
    let before = database_reads(&app).await;
    // Eight writers at once, each changing its VM and reading it right after the answer, while
    // another user asks for the same VMs by id.
    let me = app.address.clone();
    let writers = ids.iter().map(|id| {
        let (app, me) = (&app, &me);
        async move {
            for round in 0..10 {
                change_then_read(app, me, me, id, &format!("{id} round {round}")).await;
            }
        }
    });
    let prober = async {
        for _ in 0..5 {
            for id in &ids {
                let (status, body) = app
                    .call_as(
                        &other_token,
                        Method::GET,
                        &format!("/api/v1/vms/{id}"),
                        None,
                    )
                    .await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
                assert_eq!(body["error"]["code"], "VM_NOT_FOUND", "{body}");
            }
        }
    };
    futures::join!(join_all(writers), prober);
    let after = database_reads(&app).await;
    assert!(
        after - before >= 80.0 + 40.0,
        "the reads should have gone to PostgreSQL: {before} -> {after}"
    );
}

async fn database_reads(app: &TestApp) -> f64 {
    sample(
        app,
        &app.address,
        r#"voidvm_vm_reads_total{from="database"}"#,
    )
    .await
    .unwrap_or(0.0)
}
