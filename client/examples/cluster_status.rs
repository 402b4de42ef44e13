//! Prints every replica's role and log progress, like `autoglm cluster status`.
//!
//! `cargo run -p autoglm-client --example cluster_status -- 127.0.0.1:7001`

use autoglm_client::{role_name, Client, ClientOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    // Credentials from AUTOGLM_CA_FILE, AUTOGLM_CERT_FILE/KEY_FILE or AUTOGLM_TOKEN.
    let credentials = autoglm_client::security::Credentials::from_env()?;
    let client = Client::new(endpoints.split(','), ClientOptions::new(credentials))?;
    let any = client.status().await?;
    for member in any.voters.iter().chain(&any.learners) {
        match client.status_of(&member.addr).await {
            Ok(s) => println!(
                "{} {} {} term {} applied {:?}",
                s.id,
                member.addr,
                role_name(s.role),
                s.term,
                s.applied_index
            ),
            Err(e) => println!("{} {} unreachable: {e}", member.id, member.addr),
        }
    }
    Ok(())
}
