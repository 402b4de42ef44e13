//! `http` attempts: one request to the inference server on this node (e.g. an
//! OpenAI-compatible `/v1/completions`). Success is a 2xx status; the status
//! is reported as the exit code and the end of the body as the output tail.

use std::future::Future;
use std::time::Duration;

use autoglm_client::proto::HttpPayload;
use reqwest::Method;

use super::{until_stopped, Ended, StopCause, Tail};

/// Where and how requests go.
pub(super) struct Target<'a> {
    pub client: &'a reqwest::Client,
    /// Base URL, e.g. http://127.0.0.1:8000; empty when the node has none.
    pub address: &'a str,
    pub timeout: Duration,
    pub tail_bytes: usize,
}

pub(super) async fn run(
    t: &Target<'_>,
    p: &HttpPayload,
    stop: impl Future<Output = StopCause>,
) -> Ended {
    let request = match build(t, p) {
        Ok(r) => r,
        Err(message) => return Ended::failed(message),
    };
    until_stopped(send(t, request), stop).await
}

fn build(t: &Target<'_>, p: &HttpPayload) -> Result<reqwest::RequestBuilder, String> {
    if t.address.is_empty() {
        return Err(
            "http: this node has no inference server address (agent config key address)".into(),
        );
    }
    if !p.path.starts_with('/') {
        return Err(format!("http: path {:?} must start with '/'", p.path));
    }
    // No method: a body means POST, as for the completion endpoints.
    let method = match p.method.trim() {
        "" if p.body.is_empty() => Method::GET,
        "" => Method::POST,
        m => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("http: invalid method {m:?}"))?,
    };
    let url = format!("{}{}", t.address.trim_end_matches('/'), p.path);
    let mut request = t.client.request(method, url).timeout(t.timeout);
    for (name, value) in &p.headers {
        request = request.header(name, value);
    }
    if !p.body.is_empty() {
        request = request.body(p.body.clone());
    }
    Ok(request)
}

async fn send(t: &Target<'_>, request: reqwest::RequestBuilder) -> Ended {
    let mut tail = Tail::new(t.tail_bytes);
    let timed_out = || format!("http: timed out after {} ms", t.timeout.as_millis());
    let mut response = match request.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Ended::failed(timed_out()),
        Err(e) => {
            return Ended::failed(format!("http: request failed: {}", crate::error_chain(&e)))
        }
    };
    let status = response.status();
    // The body is read in chunks and only its end kept: a large response
    // costs no more memory than the tail.
    let body_error = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => tail.push(&chunk),
            Ok(None) => break None,
            Err(e) if e.is_timeout() => break Some(timed_out()),
            Err(e) => {
                break Some(format!(
                    "http: reading the body failed: {}",
                    crate::error_chain(&e)
                ))
            }
        }
    };
    let reason = status.canonical_reason().unwrap_or("");
    let mut message = format!("HTTP {} {reason}", status.as_u16())
        .trim_end()
        .to_string();
    if let Some(e) = &body_error {
        message = format!("{message}; {e}");
    }
    Ended::Finished {
        success: status.is_success() && body_error.is_none(),
        exit_code: Some(i32::from(status.as_u16())),
        message,
        output_tail: tail.to_text(),
    }
}
