//! The rolling-upgrade gate: a cluster's log-entry format is raised only to
//! a version every member's build reads (server/src/scheduler/format.rs).
//! The mixed-version cluster itself runs in jepsen's upgrade nemesis, with a
//! second build (jepsen/build-upgrade.sh).

mod common;

use std::time::Duration;

use autoglm_client::ClientError;
use autoglm_server::scheduler::format::ENTRY_FORMAT_MAX;
use common::TestCluster;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_entry_format_is_raised_only_to_what_every_member_reads() {
    let mut cluster = TestCluster::new("");
    cluster.start_and_init(&[1, 2, 3]).await;
    let client = cluster.client();
    // A new cluster starts at the newest format all its first members read.
    for id in [1, 2, 3] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let s = cluster.status(id).await.unwrap();
            assert_eq!(s.entry_format_max, u32::from(ENTRY_FORMAT_MAX));
            if s.entry_format == u32::from(ENTRY_FORMAT_MAX) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replica {id} is still at entry format {}",
                s.entry_format
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let newer = (ENTRY_FORMAT_MAX + 1).to_string();
    match client.config_put("cluster/entry_format", &newer).await {
        Err(ClientError::Rpc(s)) => {
            assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
            assert!(
                s.message().starts_with("value: ")
                    && s.message().contains("reads log entry formats up to"),
                "{}",
                s.message()
            );
        }
        other => panic!("a format no member reads was accepted: {other:?}"),
    }
    // A member that cannot be asked blocks the change too.
    cluster.kill(3);
    let current = ENTRY_FORMAT_MAX.to_string();
    match client.config_put("cluster/entry_format", &current).await {
        Err(ClientError::Rpc(s)) => {
            assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
            assert!(s.message().contains("cannot be asked"), "{}", s.message());
        }
        other => panic!("raised with a member down: {other:?}"),
    }
    cluster.spawn(3).unwrap();
    cluster
        .wait_answering(3, Duration::from_secs(20))
        .await
        .unwrap();
    client
        .config_put("cluster/entry_format", &current)
        .await
        .unwrap();
    cluster.assert_no_panic();
}
