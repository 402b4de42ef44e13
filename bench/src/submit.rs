//! Control-plane throughput of the scheduler: 64 clients submit one-task jobs
//! as fast as they can to three replicas with simulated GPU agents; measured
//! are the submit latency, the submissions per second and the time from
//! submission to assignment (the leader's `assigned_ms` minus the client's
//! clock at submission; one machine, one clock).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use autoglm_agent::config::SimulatedGpu;
use autoglm_agent::AgentConfig;
use autoglm_client::proto::{ListTasksRequest, TaskState};
use autoglm_client::{Client, ClientOptions, JobBuilder, TaskBuilder};
use clap::Args;

use crate::cluster::BenchCluster;
use crate::stats::summarize;

#[derive(Args)]
pub struct SubmitArgs {
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Simulated agents, each with 8 GPUs of 64 slots.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Total submissions per second to aim for (0: as fast as the clients can).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also run the same load against a cluster started `--insecure`
    /// (plaintext, no authorization), right after, and print the ratio.
    #[arg(long)]
    compare_insecure: bool,
    /// Also run the same load while every replica's and agent's /metrics is
    /// fetched once a second (as a Prometheus at a 1 s interval would), and
    /// print the ratio.
    #[arg(long)]
    compare_scraped: bool,
}

/// What one run measured.
struct Measured {
    leader: u64,
    submitted: usize,
    per_second: f64,
    submit: crate::stats::Summary,
    assigned: usize,
    to_assigned: crate::stats::Summary,
    /// Tasks that ran to success by the time they were read (3 s after the run).
    succeeded: usize,
    to_succeeded: crate::stats::Summary,
    /// /metrics fetches during the run, when scraped.
    scrapes: Option<crate::stats::Summary>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn agent(i: usize) -> AgentConfig {
    let mut c = AgentConfig::simulated(format!("sim-{i}"), vec![SimulatedGpu::h100(); 8], 64);
    c.cpu_millis = Some(1_000_000);
    c.memory_mb = Some(10_000_000);
    c
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<()> {
    let secure = measure(&args, true, None).await?;
    print("TLS + authorization", &args, &secure);
    let mut json = serde_json::json!({"clients": args.clients, "seconds": args.seconds, "secure": as_json(&secure)});
    if args.compare_insecure {
        let insecure = measure(&args, false, None).await?;
        print("--insecure (plaintext, no authorization)", &args, &insecure);
        let ratio = secure.per_second / insecure.per_second;
        println!(
            "secure / insecure: {:.3} of the submissions/s ({:+.1}%), p99 submit {} vs {}",
            ratio,
            (ratio - 1.0) * 100.0,
            crate::stats::ms(secure.submit.p99),
            crate::stats::ms(insecure.submit.p99)
        );
        json["insecure"] = as_json(&insecure);
        json["secure_over_insecure"] = serde_json::json!(ratio);
    }
    if args.compare_scraped {
        let scraped = measure(&args, true, Some(Duration::from_secs(1))).await?;
        print(
            "TLS + authorization, /metrics scraped every second",
            &args,
            &scraped,
        );
        let ratio = scraped.per_second / secure.per_second;
        println!(
            "scraped / not scraped: {:.3} of the submissions/s ({:+.1}%), p99 submit {} vs {}",
            ratio,
            (ratio - 1.0) * 100.0,
            crate::stats::ms(scraped.submit.p99),
            crate::stats::ms(secure.submit.p99),
        );
        if let Some(scrapes) = &scraped.scrapes {
            println!("/metrics fetches: {}", scrapes.line());
            json["scrape"] = scrapes.json();
        }
        json["scraped"] = as_json(&scraped);
        json["scraped_over_not"] = serde_json::json!(ratio);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// Fetches every target's /metrics each `every` until `until`; returns how
/// long each fetch took.
async fn scrape(targets: Vec<String>, every: Duration, until: Instant) -> Vec<Duration> {
    let http = reqwest::Client::new();
    let mut took = Vec::new();
    let mut tick = tokio::time::interval(every);
    while Instant::now() < until {
        tick.tick().await;
        for t in &targets {
            let started = Instant::now();
            let fetched = match http.get(format!("http://{t}/metrics")).send().await {
                Ok(r) => r.text().await.is_ok(),
                Err(_) => false,
            };
            if fetched {
                took.push(started.elapsed());
            }
        }
    }
    took
}

fn print(label: &str, args: &SubmitArgs, m: &Measured) {
    println!(
        "== {label}: {} clients, {} s, leader {}, {} agents",
        args.clients, args.seconds, m.leader, args.agents
    );
    println!(
        "submissions: {} ({:.0}/s), submit latency {}",
        m.submitted,
        m.per_second,
        m.submit.line()
    );
    println!(
        "submit -> assigned ({} of {} assigned): {}",
        m.assigned,
        m.submitted,
        m.to_assigned.line()
    );
    println!(
        "submit -> succeeded ({} of {} succeeded, {:.0}/s over the run): {}",
        m.succeeded,
        m.submitted,
        m.succeeded as f64 / args.seconds as f64,
        m.to_succeeded.line()
    );
}

fn as_json(m: &Measured) -> serde_json::Value {
    serde_json::json!({"submitted": m.submitted, "per_second": m.per_second,
        "submit": m.submit.json(), "submit_to_assigned": m.to_assigned.json(),
        "succeeded": m.succeeded, "submit_to_succeeded": m.to_succeeded.json()})
}

async fn measure(
    args: &SubmitArgs,
    secure: bool,
    scrape_every: Option<Duration>,
) -> anyhow::Result<Measured> {
    let mut cluster = BenchCluster::start_with(3, "", secure).await?;
    for i in 0..args.agents {
        cluster.spawn_agent(&agent(i))?;
    }
    let leader = cluster.leader(None).await?;
    let client = Arc::new(Client::new(
        cluster.endpoints(),
        ClientOptions::new(cluster.admin_credentials()),
    )?);
    let started = Instant::now();
    while client.list_nodes(true).await?.nodes.len() < args.agents {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "agents did not register"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every client is one principal (the admin certificate): lift the
    // per-principal admission bucket so it measures the control plane, as an
    // operator would for a high-rate service account.
    client
        .config_put("admission/rate_per_second", "1000000")
        .await?;
    client.config_put("admission/burst", "10000000").await?;
    // Give the leader's election grace period time to pass.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let scraper = scrape_every.map(|every| {
        let mut targets: Vec<String> = cluster
            .ids()
            .iter()
            .map(|id| cluster.http_addr(*id))
            .collect();
        targets.extend(
            cluster
                .agent_names()
                .iter()
                .filter_map(|a| cluster.agent_http(a)),
        );
        tokio::spawn(scrape(targets, every, until))
    });
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| {
            let client = client.clone();
            let per_client = (args.rate > 0)
                .then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));
            tokio::spawn(async move {
                let mut out = Vec::new();
                let mut n = 0u64;
                let mut next = Instant::now();
                while Instant::now() < until {
                    if let Some(gap) = per_client {
                        tokio::time::sleep_until(next.into()).await;
                        next += gap;
                    }
                    let job = JobBuilder::new(&format!("client-{c}"))
                        .idempotency_key(&format!("c{c}-{n}"))
                        .task(TaskBuilder::sim("t", Duration::from_millis(10)).gpus(1, 100));
                    let (at_ms, t0) = (now_ms(), Instant::now());
                    if let Ok(r) = client.submit(job).await {
                        out.push((r.task_ids["t"], at_ms, t0.elapsed()));
                    }
                    n += 1;
                }
                out
            })
        })
        .collect();
    let mut submitted = Vec::new();
    for t in tasks {
        submitted.extend(t.await?);
    }
    let per_second = submitted.len() as f64 / args.seconds as f64;
    let submit = summarize(&submitted.iter().map(|s| s.2).collect::<Vec<_>>());
    let scrapes = match scraper {
        Some(s) => {
            let took = s.await?;
            anyhow::ensure!(!took.is_empty(), "no /metrics fetch succeeded");
            Some(summarize(&took))
        }
        None => None,
    };

    // Wait for the queue to drain, then read every task's assignment time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut assigned: HashMap<u64, u64> = HashMap::new();
    let mut succeeded: HashMap<u64, u64> = HashMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_tasks(ListTasksRequest {
                page_size: 1000,
                page_token: token.clone(),
                stale: true,
                ..Default::default()
            })
            .await?;
        for t in &page.tasks {
            let first = t.attempts.first().map_or(t.assigned_ms, |a| a.assigned_ms);
            if first > 0 {
                assigned.insert(t.id, first);
            }
            if t.state == TaskState::Succeeded as i32 {
                succeeded.insert(t.id, t.finished_ms);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // From each submission to the time `reached` records for its task.
    let since_submit = |reached: &HashMap<u64, u64>| -> Vec<Duration> {
        submitted
            .iter()
            .filter_map(|(id, at, _)| {
                reached
                    .get(id)
                    .map(|t| Duration::from_millis(t.saturating_sub(*at)))
            })
            .collect()
    };
    let to_assigned = since_submit(&assigned);
    let to_succeeded = since_submit(&succeeded);
    Ok(Measured {
        leader,
        submitted: submitted.len(),
        per_second,
        submit,
        assigned: to_assigned.len(),
        to_assigned: summarize(&to_assigned),
        succeeded: to_succeeded.len(),
        to_succeeded: summarize(&to_succeeded),
        scrapes,
    })
}
