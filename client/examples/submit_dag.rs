//! Submits a small DAG and follows it to the end.
//!
//! Start a cluster first (`cargo run --release -p autoglm-local -- --keep`
//! prints its endpoints), then:
//! `cargo run -p autoglm-client --example submit_dag -- 127.0.0.1:7001,127.0.0.1:7002`

use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::TaskState;
use autoglm_client::{Client, ClientOptions, JobBuilder, TaskBuilder, Watch};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    // Credentials from AUTOGLM_CA_FILE, AUTOGLM_CERT_FILE/KEY_FILE or AUTOGLM_TOKEN.
    let credentials = autoglm_client::security::Credentials::from_env()?;
    let client = Arc::new(Client::new(
        endpoints.split(','),
        ClientOptions::new(credentials),
    )?);
    let job = JobBuilder::new("example")
        .idempotency_key("example-dag-1")
        .task(TaskBuilder::sim("prepare", Duration::from_millis(200)))
        .task(
            TaskBuilder::sim("infer", Duration::ZERO)
                .tokens(512, 128)
                .gpus(1, 8_000)
                .after("prepare"),
        )
        .task(TaskBuilder::sim("report", Duration::from_millis(50)).after_any("infer"));
    let submitted = client.submit(job).await?;
    println!(
        "job {} (duplicate: {})",
        submitted.job_id, submitted.duplicate
    );
    let mut events = client.watch(Watch::Job(submitted.job_id), 0);
    while let Some(event) = events.next().await {
        let task = event?.task.unwrap_or_default();
        let state = TaskState::try_from(task.state).unwrap_or(TaskState::Unspecified);
        let name = task.spec.map(|s| s.name).unwrap_or_default();
        println!("{name:<8} {state:?} {}", task.node);
    }
    Ok(())
}
