//! `autoglm submit`, `autoglm task ...`, `autoglm job ...`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use autoglm_client::proto::{Attempt, ListTasksRequest, NodeUsage, Task, TaskState};
use autoglm_client::{Client, JobBuilder, TaskBuilder, Watch};
use clap::{Args, Subcommand};
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::{self, opt};
use crate::CliError;
use autoglm_client::jobfile;

/// Exit code of `watch` when everything ended but something did not succeed.
pub const EXIT_NOT_ALL_SUCCEEDED: u8 = 5;

#[derive(Args)]
pub struct SubmitArgs {
    /// A job file (YAML) with a DAG of tasks; otherwise one task from the flags.
    #[arg(short = 'f', long = "file", conflicts_with_all = ["name", "argv", "sim_ms"])]
    file: Option<PathBuf>,
    /// Who submits (rate limits and idempotency are per client).
    #[arg(long, default_value = "cli")]
    client_id: String,
    /// Resubmitting with the same key returns the first job.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Task name (one-task submission).
    #[arg(long, required_unless_present = "file")]
    name: Option<String>,
    /// A simulated task of this many ms instead of a command.
    #[arg(long)]
    sim_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    gpus: u32,
    #[arg(long, default_value_t = 0)]
    gpu_memory_mb: u64,
    #[arg(long)]
    priority: Option<u32>,
    #[arg(long)]
    model: Option<String>,
    /// Node selector, key=value; repeat for more.
    #[arg(long = "label", value_parser = parse_kv)]
    labels: Vec<(String, String)>,
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Follow the job until it ends.
    #[arg(long)]
    wait: bool,
    /// The command to run, after `--`.
    #[arg(last = true)]
    argv: Vec<String>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

#[derive(Subcommand)]
pub enum TaskCommand {
    Get {
        id: u64,
        #[arg(long)]
        stale: bool,
    },
    /// Tasks, filtered and paged.
    List {
        /// queued, running, succeeded... (repeatable)
        #[arg(long = "state")]
        states: Vec<String>,
        #[arg(long)]
        job: Option<u64>,
        #[arg(long)]
        node: Option<String>,
        /// key=value of the task's node selector.
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        page_token: Option<String>,
        #[arg(long)]
        stale: bool,
    },
    Watch {
        id: u64,
    },
    /// An exec attempt's whole output, relayed from its node by the leader.
    Logs {
        id: u64,
        /// Which attempt (default: the latest).
        #[arg(long)]
        attempt: Option<u32>,
        /// Keep printing new output until the attempt ends; survives a
        /// leader failover.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Cancel a task and, transitively, its dependents.
    Cancel {
        id: u64,
    },
}

#[derive(Subcommand)]
pub enum JobCommand {
    Get {
        id: u64,
        #[arg(long)]
        stale: bool,
    },
    Watch {
        id: u64,
    },
    Cancel {
        id: u64,
    },
}

pub use autoglm_client::task_state_name as state_name;

fn parse_state(s: &str) -> Result<i32, CliError> {
    let all = [
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::Assigned,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::TimedOut,
    ];
    all.iter()
        .find(|st| state_name(**st as i32) == s)
        .map(|st| *st as i32)
        .ok_or_else(|| CliError::usage(format!("--state: unknown state '{s}'")))
}

fn is_terminal(state: i32) -> bool {
    matches!(
        TaskState::try_from(state),
        Ok(TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::TimedOut)
    )
}

/// One watch event as `autoglm watch` prints it; a result taken from the
/// cache names the task that produced it.
fn watch_line(task: &Task) -> String {
    let name = task.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("");
    let at = if task.node.is_empty() {
        String::new()
    } else {
        format!(" on {}", task.node)
    };
    let why = match (task.reason.as_str(), task.cached_from_task_id) {
        ("", _) => String::new(),
        (reason, None) => format!(" ({reason})"),
        (reason, Some(from)) => format!(" ({reason} from task {from})"),
    };
    format!(
        "task {:>6} {:<24} {:<10} attempt {}{at}{why}",
        task.id,
        name,
        state_name(task.state),
        task.attempt
    )
}

pub fn task_json(t: &Task) -> serde_json::Value {
    json!({
        "id": t.id, "job_id": t.job_id, "name": t.spec.as_ref().map(|s| s.name.clone()),
        "state": state_name(t.state), "attempt": t.attempt, "node": t.node, "gpus": t.gpus,
        "reason": t.reason, "message": t.message, "exit_code": t.exit_code, "output_tail": t.output_tail,
        "created_ms": t.created_ms, "assigned_ms": t.assigned_ms, "started_ms": t.started_ms,
        "finished_ms": t.finished_ms, "revision": t.revision,
        "cache": t.spec.as_ref().and_then(|s| s.cache.as_ref()).map(|c| json!({
            "key": c.key, "ttl_ms": c.ttl_ms, "refresh": c.refresh,
        })),
        "cached_from_task_id": t.cached_from_task_id,
        "attempts": t.attempts.iter().map(attempt_json).collect::<Vec<_>>(),
        "waiting": t.waiting.as_ref().map(|w| json!({
            "summary": w.summary, "nodes": w.nodes, "nodes_fit": w.nodes_fit,
            "removed": w.removed.iter().map(|f| (f.filter.clone(), f.nodes)).collect::<std::collections::BTreeMap<_, _>>(),
            "ahead": w.ahead, "ahead_capped": w.ahead_capped,
            "backoff_until_ms": w.backoff_until_ms, "live_metrics": w.live_metrics,
        })),
    })
}

fn attempt_json(a: &Attempt) -> serde_json::Value {
    json!({
        "attempt": a.attempt, "node": a.node, "gpus": a.gpus, "result": a.result,
        "exit_code": a.exit_code, "assigned_ms": a.assigned_ms, "started_ms": a.started_ms,
        "finished_ms": a.finished_ms, "run_ms": a.run_ms,
    })
}

fn print_attempts(attempts: &[Attempt]) {
    let rows = attempts
        .iter()
        .map(|a| {
            vec![
                a.attempt.to_string(),
                a.node.clone(),
                gpu_list(&a.gpus),
                a.result.clone(),
                opt(a.exit_code.map(|c| c as u64)),
                format!("{} ms", a.run_ms),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(
            &["ATTEMPT", "NODE", "GPUS", "RESULT", "EXIT", "RUN TIME"],
            rows
        )
    );
}

fn gpu_list(gpus: &[u32]) -> String {
    if gpus.is_empty() {
        return "-".into();
    }
    gpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn usage_json(u: &NodeUsage) -> serde_json::Value {
    json!({"node": u.node, "attempts": u.attempts, "run_ms": u.run_ms, "gpu_ms": u.gpu_ms})
}

fn print_usage(usage: &[NodeUsage]) {
    let rows = usage
        .iter()
        .map(|u| {
            vec![
                u.node.clone(),
                u.attempts.to_string(),
                format!("{:.1}", u.run_ms as f64 / 1000.0),
                format!("{:.1}", u.gpu_ms as f64 / 1000.0),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["NODE", "ATTEMPTS", "RUN S", "GPU S"], rows)
    );
}

fn task_row(t: &Task) -> Vec<String> {
    let name = t.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let runtime = if t.finished_ms > 0 && t.started_ms > 0 {
        format!("{} ms", t.finished_ms - t.started_ms)
    } else {
        "-".into()
    };
    vec![
        t.id.to_string(),
        t.job_id.to_string(),
        name,
        state_name(t.state).into(),
        t.attempt.to_string(),
        if t.node.is_empty() {
            "-".into()
        } else {
            t.node.clone()
        },
        if t.reason.is_empty() {
            "-".into()
        } else {
            t.reason.clone()
        },
        opt(t.exit_code.map(|c| c as u64)),
        runtime,
    ]
}

const TASK_HEADER: [&str; 9] = [
    "ID", "JOB", "NAME", "STATE", "ATTEMPT", "NODE", "REASON", "EXIT", "RUN TIME",
];

fn print_tasks(tasks: &[Task], as_json: bool) {
    if as_json {
        println!(
            "{}",
            output::json(&json!(tasks.iter().map(task_json).collect::<Vec<_>>()))
        );
    } else {
        println!(
            "{}",
            output::table(&TASK_HEADER, tasks.iter().map(task_row).collect())
        );
    }
}

fn single_task(args: &SubmitArgs) -> Result<JobBuilder, CliError> {
    let name = args
        .name
        .as_deref()
        .ok_or_else(|| CliError::usage("--name: required without -f"))?;
    let mut t = match (args.sim_ms, args.argv.is_empty()) {
        (Some(ms), true) => TaskBuilder::sim(name, Duration::from_millis(ms)),
        (None, false) => TaskBuilder::exec(name, args.argv.clone()),
        _ => {
            return Err(CliError::usage(
                "give either --sim-ms or a command after --",
            ))
        }
    };
    if args.gpus > 0 || args.gpu_memory_mb > 0 {
        t = t.gpus(args.gpus, args.gpu_memory_mb);
    }
    if let Some(p) = args.priority {
        t = t.priority(p);
    }
    if let Some(m) = &args.model {
        t = t.model(m);
    }
    for (k, v) in &args.labels {
        t = t.label(k, v);
    }
    if let Some(ms) = args.timeout_ms {
        t = t.attempt_timeout(Duration::from_millis(ms));
    }
    if let Some(n) = args.max_attempts {
        t = t.max_attempts(n);
    }
    Ok(JobBuilder::new(&args.client_id).task(t))
}

pub async fn submit(client: &Arc<Client>, args: SubmitArgs, as_json: bool) -> Result<(), CliError> {
    let mut job = match &args.file {
        Some(path) => jobfile::load(path, &args.client_id).map_err(CliError::usage)?,
        None => single_task(&args)?,
    };
    if let Some(key) = &args.idempotency_key {
        job = job.idempotency_key(key);
    }
    let r = client.submit(job).await?;
    if as_json {
        println!(
            "{}",
            output::json(
                &json!({"job_id": r.job_id, "task_ids": r.task_ids, "duplicate": r.duplicate})
            )
        );
    } else {
        let note = if r.duplicate {
            " (already submitted with this key)"
        } else {
            ""
        };
        println!("job {} with {} task(s){note}", r.job_id, r.task_ids.len());
    }
    if args.wait {
        return watch(client, Watch::Job(r.job_id), as_json).await;
    }
    Ok(())
}

/// Prints each change as it happens, then a summary; fails with
/// [`EXIT_NOT_ALL_SUCCEEDED`] when something did not succeed.
/// Writes the output as it arrives: raw bytes, or with `--json` one object
/// per chunk (`data` as text, invalid UTF-8 replaced).
async fn logs(
    client: &Arc<Client>,
    id: u64,
    attempt: u32,
    follow: bool,
    as_json: bool,
) -> Result<(), CliError> {
    use std::io::Write;
    let mut stream = client.task_output(id, attempt, 0, follow);
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let written = if as_json {
            let line = json!({
                "attempt": chunk.attempt, "node": chunk.node, "offset": chunk.offset,
                "data": String::from_utf8_lossy(&chunk.data),
            });
            writeln!(out, "{line}")
        } else {
            out.write_all(&chunk.data)
        };
        // The reader went away (`| head`): stop quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

async fn watch(client: &Arc<Client>, watched: Watch, as_json: bool) -> Result<(), CliError> {
    let mut stream = client.watch(watched, 0);
    let mut last: std::collections::BTreeMap<u64, Task> = Default::default();
    while let Some(event) = stream.next().await {
        let Some(task) = event?.task else { continue };
        if as_json {
            println!(
                "{}",
                serde_json::to_string(&task_json(&task)).unwrap_or_default()
            );
        } else {
            println!("{}", watch_line(&task));
        }
        last.insert(task.id, task);
    }
    let failed = last
        .values()
        .filter(|t| t.state != TaskState::Succeeded as i32)
        .count();
    if !last.values().all(|t| is_terminal(t.state)) {
        return Err(CliError {
            message: "watch ended before every task finished".into(),
            code: 3,
        });
    }
    if !as_json {
        println!(
            "{} task(s) finished: {} succeeded, {failed} did not",
            last.len(),
            last.len() - failed
        );
    }
    if failed > 0 {
        return Err(CliError {
            message: format!("{failed} task(s) did not succeed"),
            code: EXIT_NOT_ALL_SUCCEEDED,
        });
    }
    Ok(())
}

pub async fn task(
    client: &Arc<Client>,
    command: TaskCommand,
    as_json: bool,
) -> Result<(), CliError> {
    match command {
        TaskCommand::Get { id, stale } => {
            let t = client.get_task(id, stale).await?;
            if as_json {
                println!("{}", output::json(&task_json(&t)));
            } else {
                print_tasks(std::slice::from_ref(&t), false);
                if !t.attempts.is_empty() {
                    print_attempts(&t.attempts);
                }
                if let Some(w) = &t.waiting {
                    println!("{}", w.summary);
                }
                if !t.message.is_empty() {
                    println!("message: {}", t.message);
                }
                if !t.output_tail.is_empty() {
                    println!("output:\n{}", t.output_tail);
                }
            }
        }
        TaskCommand::List {
            states,
            job,
            node,
            label,
            limit,
            page_token,
            stale,
        } => {
            let states = states
                .iter()
                .map(|s| parse_state(s))
                .collect::<Result<Vec<_>, _>>()?;
            let req = ListTasksRequest {
                states,
                job_id: job.unwrap_or(0),
                node: node.unwrap_or_default(),
                label: label.unwrap_or_default(),
                page_size: limit,
                page_token: page_token.unwrap_or_default(),
                stale,
            };
            let page = client.list_tasks(req).await?;
            if as_json {
                let tasks: Vec<_> = page.tasks.iter().map(task_json).collect();
                println!(
                    "{}",
                    output::json(&json!({"tasks": tasks, "next_page_token": page.next_page_token}))
                );
            } else {
                print_tasks(&page.tasks, false);
                if !page.next_page_token.is_empty() {
                    println!("more: --page-token {}", page.next_page_token);
                }
            }
        }
        TaskCommand::Watch { id } => watch(client, Watch::Task(id), as_json).await?,
        TaskCommand::Logs {
            id,
            attempt,
            follow,
        } => logs(client, id, attempt.unwrap_or(0), follow, as_json).await?,
        TaskCommand::Cancel { id } => {
            let r = client.cancel_task(id).await?;
            if as_json {
                println!(
                    "{}",
                    output::json(&json!({"changed_task_ids": r.changed_task_ids}))
                );
            } else {
                println!(
                    "{} task(s) changed: {:?}",
                    r.changed_task_ids.len(),
                    r.changed_task_ids
                );
            }
        }
    }
    Ok(())
}

pub async fn job(client: &Arc<Client>, command: JobCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        JobCommand::Get { id, stale } => {
            let j = client.get_job(id, stale).await?;
            if as_json {
                let tasks: Vec<_> = j.tasks.iter().map(task_json).collect();
                let v = json!({"id": j.id, "client_id": j.client_id, "idempotency_key": j.idempotency_key,
                    "created_ms": j.created_ms, "finished_ms": j.finished_ms, "revision": j.revision, "tasks": tasks,
                    "usage": j.usage.iter().map(usage_json).collect::<Vec<_>>()});
                println!("{}", output::json(&v));
            } else {
                let done = if j.finished_ms > 0 {
                    "finished"
                } else {
                    "in progress"
                };
                println!("job {} ({done}), client {}", j.id, j.client_id);
                print_tasks(&j.tasks, false);
                if !j.usage.is_empty() {
                    print_usage(&j.usage);
                }
            }
        }
        JobCommand::Watch { id } => watch(client, Watch::Job(id), as_json).await?,
        JobCommand::Cancel { id } => {
            let r = client.cancel_job(id).await?;
            if as_json {
                println!(
                    "{}",
                    output::json(&json!({"changed_task_ids": r.changed_task_ids}))
                );
            } else {
                println!("{} task(s) cancelled", r.changed_task_ids.len());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_line_names_where_a_cached_result_came_from() {
        let task = Task {
            id: 12,
            state: TaskState::Succeeded as i32,
            reason: "cached".into(),
            cached_from_task_id: Some(7),
            ..Default::default()
        };
        assert!(
            watch_line(&task).ends_with("attempt 0 (cached from task 7)"),
            "{}",
            watch_line(&task)
        );
        let ran = Task {
            reason: "succeeded".into(),
            node: "gpu-1".into(),
            cached_from_task_id: None,
            ..task.clone()
        };
        assert!(
            watch_line(&ran).ends_with("on gpu-1 (succeeded)"),
            "{}",
            watch_line(&ran)
        );
        let json = task_json(&task);
        assert_eq!(json["cached_from_task_id"], 7);
        assert!(task_json(&ran)["cached_from_task_id"].is_null());
    }
}
