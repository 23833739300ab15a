//! `floodwall`: the service's command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use floodwall_server::config::{Config, LogFormat};

mod admin_cli;

// The service allocates a little per request in many places (headers, bodies, futures); mimalloc
// keeps those allocations thread-local where glibc's malloc takes arena locks and consolidates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        action: admin_cli::Action,
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
enum ConfigCommand {
    /// Validate a file: exit 0, or print every error with its line and exit 2.
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Print the example configuration, every key commented, to start a file from.
    Example,
}

/// The example configuration, as the repository ships it.
const EXAMPLE_CONFIG: &str = include_str!("../../../floodwall.example.toml");

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => exit_on_usage_error(&error),
    };
    let command = cli.command.unwrap_or(Command::Serve {
        config: None,
        listen: None,
    });
    // `serve` reads its file before logging starts: the log's format is in it.
    let mut served = None;
    let format = match &command {
        Command::Serve { config, .. } => match load(config.as_ref()) {
            Ok(loaded) => {
                let format = loaded.log.format;
                served = Some(loaded);
                format
            }
            Err(error) => {
                eprintln!("floodwall: {}", report(&error));
                return ExitCode::from(2);
            }
        },
        _ => LogFormat::Text,
    };
    init_logging(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("floodwall: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve { config, listen } => match served {
                Some(loaded) => serve(loaded, config, listen)
                    .await
                    .map(|()| ExitCode::SUCCESS),
                None => Err(anyhow::anyhow!("the configuration was not loaded")),
            },
            Command::Check {
                config,
                server,
                policy,
                key,
                cost,
                peek,
            } => {
                let cost = if peek { 0 } else { cost };
                match server {
                    Some(server) => ask_server(&server, config, &policy, &key, cost).await,
                    None => check(config, policy, key, cost).await,
                }
            }
            Command::Admin {
                server,
                token_env,
                action,
            } => admin_cli::run(&server, &token_env, &action).await,
            Command::Completions { shell } => {
                let mut command = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut command, "floodwall", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
            Command::Man => {
                let command = <Cli as clap::CommandFactory>::command();
                clap_mangen::Man::new(command)
                    .render(&mut std::io::stdout())
                    .map(|()| ExitCode::SUCCESS)
                    .map_err(anyhow::Error::from)
            }
            Command::Config {
                command: ConfigCommand::Example,
            } => {
                print!("{EXAMPLE_CONFIG}");
                Ok(ExitCode::SUCCESS)
            }
            Command::Config {
                command: ConfigCommand::Check { file },
            } => match Config::from_file(&file) {
                Ok(config) => {
                    for warning in config.warnings() {
                        eprintln!("{}: warning: {warning}", file.display());
                    }
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    Ok(ExitCode::from(2))
                }
            },
        }
    });
    result.unwrap_or_else(|error| {
        eprintln!("floodwall: {}", report(&error));
        ExitCode::from(2)
    })
}

/// Prints a usage error and exits (2, as clap does; help and version exit 0), adding a tip
/// when the service's own flags come before `serve`.
fn exit_on_usage_error(error: &clap::Error) -> ! {
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

/// `error` and its causes on one line, each cause once: errors that already show their cause in
/// their own message would otherwise repeat it.
fn report(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::from_file(path)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}")),
        None => Ok(Config::embedded_default()),
    }
}

/// Logs to standard output in `format`, at the level of `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        _ => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .init(),
    }
}

async fn serve(
    mut config: Config,
    path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let main = floodwall_server::listen(config.server.listen)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = match &config.admin {
        Some(admin) => Some(
            floodwall_server::listen(admin.listen)
                .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?,
        ),
        None => None,
    };
    let check = match (config.check.enabled, config.check.listen) {
        (true, Some(listen)) => Some(
            floodwall_server::listen(listen)
                .with_context(|| format!("cannot listen on {listen} (check API)"))?,
        ),
        _ => None,
    };
    let rls = match &config.rls {
        Some(rls) => Some(
            floodwall_server::listen(rls.listen)
                .with_context(|| format!("cannot listen on {} (RLS)", rls.listen))?,
        ),
        None => None,
    };
    let listeners = floodwall_server::Listeners {
        main,
        admin,
        check,
        rls,
    };
    let (configs, updates) = tokio::sync::watch::channel(config);
    tokio::spawn(reload_on_hangup(path, listen, configs));
    floodwall_server::run_reloadable(updates, listeners, shutdown_signal()).await?;
    Ok(())
}

/// Re-reads the file on each SIGHUP: a valid file replaces the running configuration at once,
/// an invalid one is logged, one line per error, and changes nothing. `--listen` still overrides
/// the file.
async fn reload_on_hangup(
    path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    configs: tokio::sync::watch::Sender<Config>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let Some(path) = &path else {
                tracing::warn!("SIGHUP: no --config file to reload; running the embedded default");
                continue;
            };
            match Config::from_file(path) {
                Ok(mut config) => {
                    if let Some(listen) = listen {
                        config.server.listen = listen;
                    }
                    let _ = configs.send(config);
                }
                Err(errors) => {
                    for error in &errors.0 {
                        tracing::error!("SIGHUP: {}", error.one_line());
                    }
                    let count = match errors.0.len() {
                        1 => "1 error".to_owned(),
                        n => format!("{n} errors"),
                    };
                    tracing::error!(
                        "SIGHUP: {} rejected, keeping the running configuration ({count} above)",
                        path.display()
                    );
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (path, listen, configs);
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn check(
    path: Option<PathBuf>,
    policy: String,
    key: String,
    cost: u64,
) -> anyhow::Result<ExitCode> {
    let path = path.context("--config is needed without --server")?;
    let config = load(Some(&path))?;
    let policy = config.policy(&policy).cloned().with_context(|| {
        let defined: Vec<&str> = config.policies.iter().map(|p| p.name()).collect();
        format!(
            "no policy named {policy:?} in {}; defined: {}",
            path.display(),
            defined.join(", ")
        )
    })?;
    if matches!(
        config.storage.store,
        floodwall::StorageConfig::Memory { .. }
    ) {
        anyhow::bail!(
            "{} keeps limits in memory, in the service's own process: a check from here would start from a fresh store and never deny; ask the running service with --server http://{}",
            path.display(),
            config.server.listen
        );
    }
    let limiter = floodwall_server::limiter(&config.storage).await?;
    limiter
        .store()
        .verify_access(std::time::Duration::from_secs(2))
        .await
        .with_context(|| format!("the store at {} did not answer", config.storage.url()))?;
    let verdict = limiter.check(&policy, &key, cost).await?;
    println!(
        "{}",
        serde_json::to_string(&floodwall_server::single_decision_body(&verdict))?
    );
    Ok(if verdict.allowed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `floodwall check --server`: asks a running service's check API, with the token of
/// `[check] token_env` when a configuration is given, and prints its answer.
async fn ask_server(
    server: &str,
    config: Option<PathBuf>,
    policy: &str,
    key: &str,
    cost: u64,
) -> anyhow::Result<ExitCode> {
    let token = match &config {
        Some(path) => load(Some(path))?.check.token,
        None => None,
    };
    let body = serde_json::json!({ "policy": policy, "key": key, "cost": cost }).to_string();
    let (status, answer) = send(
        server,
        http::Method::POST,
        "/v1/check",
        token.as_deref(),
        Some(body),
    )
    .await?;
    match status.as_u16() {
        200 | 429 => println!("{answer}"),
        _ => anyhow::bail!("{server} answered {status}: {answer}"),
    }
    Ok(if status == http::StatusCode::OK {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Sends one request to the service at `server` (`http://host:port`) on a connection of its
/// own, with `token` as its bearer token and `body` as JSON; answers its status and body.
async fn send(
    server: &str,
    method: http::Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, String)> {
    let base: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL like http://127.0.0.1:8080"))?;
    let authority = base
        .authority()
        .filter(|_| base.scheme_str() == Some("http"))
        .with_context(|| format!("--server {server:?} must be http://host:port"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .with_context(|| format!("cannot reach {server}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str());
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let body = bytes::Bytes::from(body.unwrap_or_default());
    let request = request.body(http_body_util::Full::new(body))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
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
