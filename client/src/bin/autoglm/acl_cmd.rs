//! `autoglm acl`: tokens and who the cluster takes you for.

use autoglm_client::proto::{CreateTokenResponse, TokenInfo};
use autoglm_client::Client;
use clap::Subcommand;
use serde_json::json;

use crate::output;
use crate::CliError;

#[derive(Subcommand)]
pub enum AclCommand {
    /// Create the cluster's first admin token (once; needs an admin certificate).
    Bootstrap {
        /// The token's principal name.
        #[arg(long, default_value = "root")]
        name: String,
    },
    /// User tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Who the cluster takes this caller for.
    Whoami,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// Principal name; jobs submitted with the token are owned by it.
        #[arg(long)]
        name: String,
        /// admin, operator, submitter or reader.
        #[arg(long)]
        role: String,
        /// Lifetime, e.g. 3600s, 90m, 12h, 30d; default: no expiry.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Every token, without secrets.
    List,
    /// Revoke a token by accessor.
    Revoke { accessor: String },
}

/// `30d`, `12h`, `90m`, `45s` or plain seconds.
fn parse_ttl(text: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::usage(format!(
            "--ttl '{text}': expected a number with s, m, h or d"
        ))
    };
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let scale = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(bad)
}

fn info_json(t: &TokenInfo) -> serde_json::Value {
    json!({
        "accessor": t.accessor,
        "name": t.name,
        "role": t.role,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
    })
}

fn print_created(created: &CreateTokenResponse, json: bool) {
    let info = created.info.clone().unwrap_or_default();
    if json {
        let mut v = info_json(&info);
        v["secret"] = json!(created.secret);
        println!("{}", output::json(&v));
    } else {
        println!("accessor  {}", info.accessor);
        println!("name      {}", info.name);
        println!("role      {}", info.role);
        println!("secret    {}", created.secret);
        println!("(the secret is shown only now: pass it as --token or AUTOGLM_TOKEN)");
    }
}

pub async fn run(client: &Client, command: AclCommand, json: bool) -> Result<(), CliError> {
    match command {
        AclCommand::Bootstrap { name } => {
            print_created(&client.acl_bootstrap(&name).await?, json);
        }
        AclCommand::Token(TokenCommand::Create { name, role, ttl }) => {
            let ttl = ttl.as_deref().map(parse_ttl).transpose()?.unwrap_or(0);
            print_created(&client.create_token(&name, &role, ttl).await?, json);
        }
        AclCommand::Token(TokenCommand::List) => {
            let tokens = client.list_tokens().await?;
            if json {
                let list: Vec<_> = tokens.iter().map(info_json).collect();
                println!("{}", output::json(&json!(list)));
            } else {
                let rows = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.accessor.clone(),
                            t.name.clone(),
                            t.role.clone(),
                            t.created_ms.to_string(),
                            output::opt(t.expires_ms),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    output::table(
                        &["ACCESSOR", "NAME", "ROLE", "CREATED MS", "EXPIRES MS"],
                        rows
                    )
                );
            }
        }
        AclCommand::Token(TokenCommand::Revoke { accessor }) => {
            client.revoke_token(&accessor).await?;
            if json {
                println!("{}", output::json(&json!({"revoked": accessor})));
            } else {
                println!("revoked {accessor}");
            }
        }
        AclCommand::Whoami => {
            let me = client.who_am_i().await?;
            if json {
                println!(
                    "{}",
                    output::json(&json!({"name": me.name, "role": me.role, "via": me.via}))
                );
            } else {
                println!("{} ({}, by {})", me.name, me.role, me.via);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_take_units_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90").ok(), Some(90));
        assert_eq!(parse_ttl("90m").ok(), Some(5400));
        assert_eq!(parse_ttl("2d").ok(), Some(172_800));
        for bad in ["", "0", "h", "5w", "-1s", "99999999999999999999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
