//! `floodwall`: the service's command line. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use floodwall_server::config::Config;

// The service allocates a little per request in many places (headers, bodies, futures); mimalloc
// keeps those allocations thread-local where glibc's malloc takes arena locks and consolidates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "floodwall",
    version,
    about = "Exact, shared rate limiting as a service"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the check API and the configured routes (no config: the embedded demo).
    Serve {
        /// The TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen here instead of `[server] listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Decide one request and print the decision (exit 0 allowed, 1 denied, 2 error).
    Check {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        policy: String,
        #[arg(long)]
        key: String,
        #[arg(long, default_value_t = 1)]
        cost: u64,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a file: exit 0, or print every error with its line and exit 2.
    Check { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("floodwall: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Command::Serve {
            config: None,
            listen: None,
        }) {
            Command::Serve { config, listen } => {
                serve(config, listen).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Check {
                config,
                policy,
                key,
                cost,
            } => check(config, policy, key, cost).await,
            Command::Config {
                command: ConfigCommand::Check { file },
            } => match Config::from_file(&file) {
                Ok(_) => {
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
        eprintln!("floodwall: {error:#}");
        ExitCode::from(2)
    })
}

fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::from_file(path)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}")),
        None => Ok(Config::embedded_default()),
    }
}

async fn serve(path: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let mut config = load(path.as_ref())?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    let main = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = match &config.admin {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin.listen)
                .await
                .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?,
        ),
        None => None,
    };
    let check = match (config.check.enabled, config.check.listen) {
        (true, Some(listen)) => Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen} (check API)"))?,
        ),
        _ => None,
    };
    let listeners = floodwall_server::Listeners { main, admin, check };
    let (configs, updates) = tokio::sync::watch::channel(config);
    tokio::spawn(reload_on_hangup(path, listen, configs));
    floodwall_server::run_reloadable(updates, listeners, shutdown_signal()).await?;
    Ok(())
}

/// Re-reads the file on each SIGHUP: a valid file replaces the running configuration at once,
/// an invalid one is logged and changes nothing. `--listen` still overrides the file.
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
                Err(errors) => tracing::error!(
                    "SIGHUP: {} rejected, keeping the running configuration:\n{errors}",
                    path.display()
                ),
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

async fn check(path: PathBuf, policy: String, key: String, cost: u64) -> anyhow::Result<ExitCode> {
    let config = load(Some(&path))?;
    let policy = config
        .policy(&policy)
        .cloned()
        .with_context(|| format!("no policy named {policy:?} in {}", path.display()))?;
    let limiter = floodwall_server::limiter(&config.storage).await?;
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
