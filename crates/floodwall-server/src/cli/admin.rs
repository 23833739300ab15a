//! `floodwall admin …`: the admin API's actions from the command line, against a running
//! service's admin listener.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use floodwall::client_key::{percent_decoded, percent_encoded};
use http::Method;
use serde_json::json;

/// The (policy, key) pair an action is on.
#[derive(Debug, Args)]
pub(crate) struct Target {
    /// The policy's name.
    #[arg(long)]
    policy: String,
    /// The client key as it is, or (with --encoded) percent-encoded as the admin API shows it.
    #[arg(long)]
    key: String,
    /// The key is given percent-encoded, as `offenders`, `blocks` and `lists` print it: the way
    /// to name a key that is not UTF-8.
    #[arg(long)]
    encoded: bool,
}

impl Target {
    /// `{policy}/{key}`, each percent-encoded.
    fn path(&self) -> String {
        let key = if self.encoded {
            percent_encoded(&percent_decoded(&self.key))
        } else {
            segment(&self.key)
        };
        format!("{}/{key}", segment(&self.policy))
    }
}

/// One admin action.
#[derive(Debug, Subcommand)]
pub(crate) enum Action {
    /// Deny every check of a key under a policy for a while (429 with Retry-After).
    Block {
        #[command(flatten)]
        target: Target,
        /// How long: 30s, 15m, 1h, 1d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
    },
    /// End a block early.
    Unblock {
        #[command(flatten)]
        target: Target,
    },
    /// Consume units of a key now (all that is left when fewer are).
    Penalise {
        #[command(flatten)]
        target: Target,
        /// How many units.
        #[arg(long)]
        units: u64,
    },
    /// Give units back to a key (never past its full quota).
    Reward {
        #[command(flatten)]
        target: Target,
        /// How many units.
        #[arg(long)]
        units: u64,
    },
    /// Show a key's state without consuming.
    Inspect {
        #[command(flatten)]
        target: Target,
    },
    /// Forget a key's state: it starts again with its full quota.
    Reset {
        #[command(flatten)]
        target: Target,
    },
    /// Never limit a key, an address or a CIDR network.
    Allow {
        /// A client key, an address (203.0.113.7) or a network (203.0.113.0/24).
        entry: String,
    },
    /// Take an entry off the allow list.
    Unallow {
        /// The entry as listed.
        entry: String,
    },
    /// Always refuse a key, an address or a CIDR network (403).
    Deny {
        /// A client key, an address (203.0.113.7) or a network (203.0.113.0/24).
        entry: String,
    },
    /// Take an entry off the deny list.
    Undeny {
        /// The entry as listed.
        entry: String,
    },
    /// Print the blocks in force.
    Blocks,
    /// Print the allow and deny lists.
    Lists,
    /// Print the keys a policy denied most over the last five minutes.
    Offenders {
        /// The policy's name.
        #[arg(long)]
        policy: String,
    },
}

/// Percent-encodes one path segment as the admin API shows keys.
fn segment(text: &str) -> String {
    percent_encoded(text.as_bytes())
}

impl Action {
    /// The request the action is: method, path and JSON body.
    fn request(&self) -> (Method, String, Option<serde_json::Value>) {
        let listed = |method, list: &str, entry: &str| {
            let path = format!("/v1/lists/{list}/{}", segment(entry));
            (method, path, None)
        };
        match self {
            Action::Block { target, duration } => (
                Method::PUT,
                format!("/v1/blocks/{}", target.path()),
                Some(json!({ "duration": duration })),
            ),
            Action::Unblock { target } => (
                Method::DELETE,
                format!("/v1/blocks/{}", target.path()),
                None,
            ),
            Action::Penalise { target, units } => (
                Method::POST,
                format!("/v1/limits/{}/penalty", target.path()),
                Some(json!({ "units": units })),
            ),
            Action::Reward { target, units } => (
                Method::POST,
                format!("/v1/limits/{}/reward", target.path()),
                Some(json!({ "units": units })),
            ),
            Action::Inspect { target } => {
                (Method::GET, format!("/v1/limits/{}", target.path()), None)
            }
            Action::Reset { target } => (
                Method::DELETE,
                format!("/v1/limits/{}", target.path()),
                None,
            ),
            Action::Allow { entry } => listed(Method::PUT, "allow", entry),
            Action::Unallow { entry } => listed(Method::DELETE, "allow", entry),
            Action::Deny { entry } => listed(Method::PUT, "deny", entry),
            Action::Undeny { entry } => listed(Method::DELETE, "deny", entry),
            Action::Blocks => (Method::GET, "/v1/blocks".to_owned(), None),
            Action::Lists => (Method::GET, "/v1/lists".to_owned(), None),
            Action::Offenders { policy } => (
                Method::GET,
                format!("/v1/offenders/{}", segment(policy)),
                None,
            ),
        }
    }
}

/// Sends `action` to the admin listener at `server` with the token in `token_env` (when that
/// variable is set); prints the answer. Exit 0 when the service did it, 1 when it refused.
pub(crate) async fn run(
    server: &str,
    token_env: &str,
    action: &Action,
) -> anyhow::Result<ExitCode> {
    let token = std::env::var(token_env).ok().filter(|t| !t.is_empty());
    let (method, path, body) = action.request();
    let body = body.map(|body| body.to_string());
    let (status, answer) =
        super::client::send(server, method, &path, token.as_deref(), body).await?;
    if status.is_success() {
        if !answer.is_empty() {
            println!("{answer}");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("floodwall: {server} answered {status}: {answer}");
        Ok(ExitCode::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn segments_keep_only_unreserved_characters() {
        assert_eq!(segment("10.0.0.0/8"), "10.0.0.0%2F8");
        assert_eq!(segment("a b?#é"), "a%20b%3F%23%C3%A9");
        assert_eq!(segment("user-7_x.~"), "user-7_x.~");
    }
}
