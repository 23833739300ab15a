//! The command line: its commands and flags, and what each command does beyond serving.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub(crate) mod admin;
pub(crate) mod check;
pub(crate) mod client;
pub(crate) mod serve;

#[derive(Debug, Parser)]
#[command(
    name = "floodwall",
    version,
    about = "Exact, shared rate limiting as a service",
    long_about = "Exact, shared rate limiting as a service: a JSON check API, a rate-limiting \
reverse proxy and an admin API, over an in-memory store or Redis.\n\n\
A bare `floodwall` serves the embedded demo on 127.0.0.1:8080 (memory store; GET / answers \
10 times a minute per client IP). Start a configuration of your own with \
`floodwall config example > floodwall.toml`, then `floodwall serve --config floodwall.toml`.",
    after_help = "A bare `floodwall` serves the demo on 127.0.0.1:8080; `floodwall serve --config FILE` serves FILE."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the check API and the configured routes (no config: the embedded demo).
    Serve {
        /// The TOML configuration file (`floodwall config example` prints one to start from).
        /// SIGHUP reloads it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Listen here instead of `[server] listen`: IP:PORT or HOST:PORT.
        #[arg(long, value_name = "ADDR", value_parser = listen_address)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Decide one request and print the decision (exit 0 allowed, 1 denied, 2 error).
    ///
    /// Asks the store of `--config` directly (Redis), or a running service with `--server`.
    Check {
        /// The service's configuration: its store and policies (and, with `--server`, the
        /// check API's token).
        #[arg(long, value_name = "FILE", required_unless_present = "server")]
        config: Option<PathBuf>,
        /// Ask the running service at this URL (e.g. http://127.0.0.1:8080) instead.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// The policy's name.
        #[arg(long)]
        policy: String,
        /// The client key, e.g. an IP address or API key.
        #[arg(long)]
        key: String,
        /// Units the request takes.
        #[arg(long, default_value_t = 1, conflicts_with = "peek")]
        cost: u64,
        /// Report the key's state without consuming anything.
        #[arg(long)]
        peek: bool,
    },
    /// Configuration tools: validate a file, print the example.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Act on a running service through its admin listener: block, penalise, list, inspect.
    ///
    /// Sends the token in the variable `--token-env` names, when it is set.
    Admin {
        /// The admin listener's URL.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9090")]
        server: String,
        /// The environment variable holding the admin token.
        #[arg(long, value_name = "NAME", default_value = "FLOODWALL_ADMIN_TOKEN")]
        token_env: String,
        /// The action.
        #[command(subcommand)]
        action: admin::Action,
    },
    /// Print a shell completion script (e.g. `floodwall completions bash > /etc/bash_completion.d/floodwall`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, in roff (e.g. `floodwall man > /usr/local/share/man/man1/floodwall.1`).
    Man,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Validate a file: exit 0, or print every error with its line and exit 2.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Print the example configuration, every key commented, to start a file from.
    Example,
}

/// Prints a usage error and exits (2, as clap does; help and version exit 0), adding a tip
/// when the service's own flags come before `serve`.
pub(crate) fn exit_on_usage_error(error: &clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let misplaced = error.kind() == ErrorKind::UnknownArgument
        && matches!(
            error.get(ContextKind::InvalidArg),
            Some(ContextValue::String(flag)) if ["--config", "--listen"].iter().any(|f| flag.starts_with(f))
        );
    let _ = error.print();
    if misplaced {
        eprintln!(
            "\ntip: --config and --listen belong to `serve`: floodwall serve --config FILE [--listen ADDR]"
        );
    }
    std::process::exit(error.exit_code())
}

fn listen_address(text: &str) -> Result<std::net::SocketAddr, String> {
    floodwall_server::config::resolve_listen(text)
}

#[cfg(test)]
mod tests {
    use super::Cli;

    /// Every subcommand and every flag says what it is for, in `--help` and the man page.
    #[test]
    fn every_subcommand_and_flag_has_a_description() {
        fn walk(command: &clap::Command, path: &str) {
            for argument in command.get_arguments() {
                let name = argument.get_id().as_str();
                if ["help", "version"].contains(&name) {
                    continue;
                }
                assert!(argument.get_help().is_some(), "{path} {name} has no help");
            }
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no description");
                walk(sub, &path);
            }
        }
        walk(&<Cli as clap::CommandFactory>::command(), "floodwall");
    }
}
