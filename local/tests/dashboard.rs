//! The web dashboard in a real headless Chromium, driven over the DevTools
//! protocol: the page shows the leader, the nodes and a job; a job's tasks
//! change state on screen without a reload; after the leader is killed the
//! page shows the new one. Screenshots land in the test's target tmpdir
//! (printed); docs/dashboard.md shows one.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use autoglm_client::{JobBuilder, TaskBuilder};
use common::TestCluster;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const YAML: &str =
    "scheduler:\n  heartbeat_interval_ms: 300\n  node_ttl_ms: 3000\n  election_grace_ms: 600\n";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and a DevTools connection to its page.
struct Browser {
    child: std::process::Child,
    socket: Socket,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        let program = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|p| {
                std::process::Command::new(p)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("no Chromium found: apt-get install chromium (.ci/run does)");
        let profile = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let child = std::process::Command::new(program)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--window-size=1400,1000",
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let targets: Option<Vec<Value>> =
                match reqwest::get(format!("http://127.0.0.1:{port}/json/list")).await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
            let page = targets.into_iter().flatten().find(|t| t["type"] == "page");
            if let Some(url) =
                page.and_then(|p| p["webSocketDebuggerUrl"].as_str().map(String::from))
            {
                break url;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium's DevTools never answered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Browser {
            child,
            socket,
            next_id: 0,
            _profile: profile,
        }
    }

    /// One DevTools command; its `result`.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket.send(Message::text(message)).await.unwrap();
        loop {
            let frame = self.socket.next().await.expect("DevTools closed").unwrap();
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    async fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// A JavaScript expression's value in the page, or the exception it threw.
    async fn try_eval(&mut self, expression: &str) -> Result<Value, Value> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        match r["exceptionDetails"].is_null() {
            true => Ok(r["result"]["value"].clone()),
            false => Err(r["exceptionDetails"].clone()),
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression)
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until `expression` is true in the page.
    async fn wait_for(&mut self, expression: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            // Throws while the page is still loading.
            if self.try_eval(expression).await == Ok(json!(true)) {
                return;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("document.body.innerText + ' | ' + document.getElementById('error').textContent")
                    .await;
                panic!("never true: {expression}\npage: {page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        use base64::Engine;
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data-state` of every task drawn in the page's graph.
const TASK_STATES: &str =
    "Array.from(document.querySelectorAll('#dag [data-task]')).map(e => e.dataset.state)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_follows_jobs_and_the_leader_live_in_a_real_browser() {
    let mut cluster = TestCluster::new(YAML);
    let ids = [1, 2, 3];
    cluster.start_and_init(&ids).await;
    cluster
        .spawn_agent(&common::sim_agent("gpu-d", 2, 1))
        .unwrap();
    let admin = cluster.client();
    let reader = admin
        .create_token("viewer", "reader", 0)
        .await
        .unwrap()
        .secret;
    let leader = cluster
        .wait_leader(&ids, None, Duration::from_secs(10))
        .await
        .unwrap();
    let follower = *ids.iter().find(|id| **id != leader).unwrap();
    let page_of = |id: u64| format!("http://{}/ui/", cluster.http_addr(id));

    // Without a token nothing but the page itself is served; a reader views
    // but may not drain.
    let http = reqwest::Client::new();
    let page = page_of(follower);
    let index = http.get(&page).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert!(index.text().await.unwrap().contains("/ui/app.js"));
    let events = format!("http://{}/ui/api/events", cluster.http_addr(follower));
    assert_eq!(http.get(&events).send().await.unwrap().status(), 401);
    let drain = format!(
        "http://{}/ui/api/node/gpu-d/drain",
        cluster.http_addr(follower)
    );
    let refused = http.post(&drain).bearer_auth(&reader).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("DrainNode"),
        "{body}"
    );

    // First the leader's page, which has the live GPU readings.
    let mut browser = Browser::launch().await;
    browser.call("Page.enable", json!({})).await;
    browser
        .navigate(&format!("{}#token={reader}", page_of(leader)))
        .await;
    browser
        .wait_for(
            &format!("document.getElementById('leader').textContent === '{leader}'"),
            Duration::from_secs(20),
        )
        .await;
    browser
        .wait_for(
            "document.querySelector('[data-node=\"gpu-d\"]') !== null",
            Duration::from_secs(20),
        )
        .await;
    // Every member answers for itself: three digests.
    browser
        .wait_for(
            "Array.from(document.querySelectorAll('#members tbody code')).filter(c => /^[0-9a-f]{16}$/.test(c.textContent)).length === 3",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser.eval("location.hash").await,
        json!(""),
        "the token left the address bar"
    );
    browser.eval("window.loadedOnce = true").await;

    // A chain of three tasks: the page redraws them as they move.
    let job = JobBuilder::new("dash")
        .task(TaskBuilder::sim("prepare", Duration::from_millis(1_200)).gpus(1, 1_000))
        .task(
            TaskBuilder::sim("train", Duration::from_millis(1_200))
                .gpus(2, 1_000)
                .after("prepare"),
        )
        .task(
            TaskBuilder::sim("evaluate", Duration::from_millis(1_200))
                .gpus(1, 1_000)
                .after("train"),
        );
    let accepted = admin.submit(job).await.unwrap();
    browser
        .wait_for(
            &format!(
                "document.querySelector('#jobs li.selected')?.dataset.job === '{}' && {TASK_STATES}.length === 3",
                accepted.job_id
            ),
            Duration::from_secs(20),
        )
        .await;
    let mut seen: Vec<Value> = Vec::new();
    let mut shot = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = browser.eval(TASK_STATES).await;
        if seen.last() != Some(&states) {
            seen.push(states.clone());
        }
        if states == json!(["succeeded", "succeeded", "succeeded"]) {
            break;
        }
        if states.as_array().unwrap().contains(&json!("running")) && !shot {
            // Let the leader's next view bring the GPU readings of the run.
            tokio::time::sleep(Duration::from_millis(700)).await;
            browser.screenshot("dashboard-running.png").await;
            shot = true;
        }
        assert!(
            Instant::now() < deadline,
            "the job never finished on screen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter()
            .any(|s| s.as_array().unwrap().contains(&json!("running"))),
        "no task was ever shown running: {seen:?}"
    );
    assert!(
        seen.len() >= 4,
        "the states changed on screen step by step: {seen:?}"
    );
    assert_eq!(
        browser.eval("window.loadedOnce").await,
        json!(true),
        "no reload"
    );

    // One task's attempts, on click.
    browser
        .eval("document.querySelector('#dag [data-task]').dispatchEvent(new MouseEvent('click', {bubbles: true}))")
        .await;
    browser
        .wait_for(
            "document.getElementById('task-title').textContent.includes('succeeded') && \
             document.getElementById('task').textContent.includes('gpu-d')",
            Duration::from_secs(10),
        )
        .await;
    browser.screenshot("dashboard-task.png").await;

    // Output is relayed by the leader, and kept for exec attempts only.
    let task = accepted.task_ids["prepare"];
    for (id, status, says) in [
        (leader, 409, "only exec attempts keep their output"),
        (follower, 503, "leader"),
    ] {
        let url = format!("http://{}/ui/api/task/{task}/output", cluster.http_addr(id));
        let r = http.get(&url).bearer_auth(&reader).send().await.unwrap();
        assert_eq!(r.status(), status, "replica {id}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(says), "{body}");
    }

    // The leader goes; a page served by a follower shows the new one.
    browser.navigate(&format!("{page}#token={reader}")).await;
    browser
        .wait_for(
            &format!("document.getElementById('leader').textContent === '{leader}'"),
            Duration::from_secs(20),
        )
        .await;
    browser.eval("window.loadedOnce = true").await;
    cluster.kill(leader);
    let new_leader = cluster
        .wait_leader(&ids, Some(leader), Duration::from_secs(15))
        .await
        .unwrap();
    browser
        .wait_for(
            &format!("document.getElementById('leader').textContent === '{new_leader}'"),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser.eval("window.loadedOnce").await,
        json!(true),
        "no reload"
    );
    // The killed replica is named unreachable; the others answer with
    // digests that agree.
    browser
        .wait_for(
            &format!(
                "document.querySelector('[data-member=\"{leader}\"]').textContent.includes('unreachable')"
            ),
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('#members .diverged').length")
            .await,
        json!(0)
    );
    browser.screenshot("dashboard-failover.png").await;
    cluster.assert_no_panic();
}
