//! `http` attempts against a real HTTP server on loopback.

use std::time::Duration;

use autoglm_client::proto::AttemptStatus;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use axum::Router;
use tokio::sync::mpsc;

use crate::common::*;

const WITHIN: Duration = Duration::from_secs(20);

/// What the server saw of one request.
#[derive(Debug)]
struct Seen {
    method: Method,
    header: Option<String>,
    body: String,
}

/// Serves /ok (echoes the body), /big (10 000 bytes then "END"),
/// /overloaded (503) and /slow (answers after 10 s).
async fn server() -> (String, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let record = move |method: Method, headers: HeaderMap, body: String| {
        let _ = tx.send(Seen {
            method,
            header: headers
                .get("x-test")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            body: body.clone(),
        });
        body
    };
    let ok = record.clone();
    let app = Router::new()
        .route(
            "/ok",
            any(move |m: Method, h: HeaderMap, body: String| async move {
                format!("echo:{}", ok(m, h, body))
            }),
        )
        .route(
            "/big",
            any(|| async { format!("{}END", "x".repeat(10_000)) }),
        )
        .route(
            "/overloaded",
            any(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
        )
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rx)
}

#[tokio::test]
async fn success_forwards_method_headers_and_body() {
    let (address, mut seen) = server().await;
    let mut s = settings();
    s.address = format!("{address}/");
    let (ex, mut rx) = executor(s);
    ex.start(assign(
        1,
        1,
        &[],
        http_spec("post", "/ok", "{\"prompt\":\"hi\"}"),
    ));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded, "{done:?}");
    assert_eq!(done.exit_code, Some(200));
    assert_eq!(done.message, "HTTP 200 OK");
    assert_eq!(done.output_tail, "echo:{\"prompt\":\"hi\"}");
    let req = seen.recv().await.expect("request seen");
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.header.as_deref(), Some("yes"));
    assert_eq!(req.body, "{\"prompt\":\"hi\"}");

    // No method and no body: GET.
    ex.start(assign(2, 1, &[], http_spec("", "/ok", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded);
    assert_eq!(seen.recv().await.expect("request seen").method, Method::GET);
}

#[tokio::test]
async fn non_2xx_fails_with_status_and_body() {
    let (address, _seen) = server().await;
    let mut s = settings();
    s.address = address;
    let (ex, mut rx) = executor(s);
    ex.start(assign(1, 1, &[], http_spec("GET", "/overloaded", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert_eq!(done.exit_code, Some(503));
    assert_eq!(done.message, "HTTP 503 Service Unavailable");
    assert_eq!(done.output_tail, "try later");
}

#[tokio::test]
async fn body_tail_is_bounded() {
    let (address, _seen) = server().await;
    let mut s = settings();
    s.address = address;
    s.output_tail_bytes = 64;
    let (ex, mut rx) = executor(s);
    ex.start(assign(1, 1, &[], http_spec("GET", "/big", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Succeeded);
    assert_eq!(done.output_tail.len(), 64);
    assert!(done.output_tail.ends_with("xEND"));
}

#[tokio::test]
async fn timeout_and_unreachable_server_fail() {
    let (address, _seen) = server().await;
    let mut s = settings();
    s.address = address;
    s.http_timeout = Duration::from_millis(300);
    let (ex, mut rx) = executor(s);
    let t0 = std::time::Instant::now();
    ex.start(assign(1, 1, &[], http_spec("GET", "/slow", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert_eq!(done.message, "http: timed out after 300 ms");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    // A port nothing listens on (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let mut s = settings();
    s.address = format!("http://{closed}");
    let (ex, mut rx) = executor(s);
    ex.start(assign(2, 1, &[], http_spec("GET", "/ok", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert_eq!(status(&done), AttemptStatus::Failed);
    assert!(
        done.message.starts_with("http: request failed"),
        "{}",
        done.message
    );

    // No inference server configured.
    let (ex, mut rx) = executor(settings());
    ex.start(assign(3, 1, &[], http_spec("GET", "/ok", "")));
    let done = run_to_end(&mut rx, WITHIN).await;
    assert!(done.message.contains("address"), "{}", done.message);
}
