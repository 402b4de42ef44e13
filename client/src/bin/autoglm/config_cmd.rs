use autoglm_client::proto::ConfigEntry;
use autoglm_client::Client;
use clap::Subcommand;
use serde_json::json;

use crate::output;
use crate::CliError;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Read a key (linearizable unless --stale).
    Get {
        key: String,
        /// Let a follower answer from its possibly stale state.
        #[arg(long)]
        stale: bool,
    },
    /// Write a key.
    Set { key: String, value: String },
    /// Write a key only if its version is EXPECTED (0: only if absent).
    Cas {
        key: String,
        value: String,
        expected: u64,
    },
}

fn entry_json(e: &ConfigEntry) -> serde_json::Value {
    json!({"key": e.key, "value": e.value, "version": e.version, "mod_index": e.mod_index})
}

fn print_entry(e: &ConfigEntry, as_json: bool) {
    if as_json {
        println!("{}", output::json(&entry_json(e)));
    } else {
        println!(
            "{}",
            output::table(
                &["KEY", "VALUE", "VERSION", "INDEX"],
                vec![vec![
                    e.key.clone(),
                    e.value.clone(),
                    e.version.to_string(),
                    e.mod_index.to_string()
                ]]
            )
        );
    }
}

pub async fn run(client: &Client, command: ConfigCommand, as_json: bool) -> Result<(), CliError> {
    match command {
        ConfigCommand::Get { key, stale } => {
            let r = client.config_get(&key, stale).await?;
            match r.entry {
                Some(e) => print_entry(&e, as_json),
                None => {
                    return Err(CliError {
                        message: format!("key '{key}' not found"),
                        code: 1,
                    })
                }
            }
        }
        ConfigCommand::Set { key, value } => {
            print_entry(&client.config_put(&key, &value).await?, as_json)
        }
        ConfigCommand::Cas {
            key,
            value,
            expected,
        } => {
            let r = client.config_cas(&key, &value, expected).await?;
            if r.succeeded {
                if let Some(e) = &r.entry {
                    print_entry(e, as_json);
                }
            } else {
                let current = r.entry.map_or("absent".to_string(), |e| {
                    format!("at version {}", e.version)
                });
                return Err(CliError {
                    message: format!(
                        "compare-and-set failed: '{key}' is {current}, not version {expected}"
                    ),
                    code: 1,
                });
            }
        }
    }
    Ok(())
}
