//! A registry rendered for a Prometheus scrape, in the OpenMetrics text
//! format (which Prometheus asks for first and reads natively).

use prometheus_client::registry::Registry;

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry's metrics as a scrape answer body.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut body = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok(body)
}
