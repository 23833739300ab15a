//! `floodwall serve`: the configuration loaded, logging started, the listeners bound, and the
//! service run until a signal stops it; SIGHUP reloads the file.

use std::path::PathBuf;

use anyhow::Context as _;
use floodwall_server::config::{Config, LogFormat};
use opentelemetry_sdk::trace::SdkTracer;

pub(crate) fn load(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(path) => Config::from_file(path)
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n{errors}")),
        None => Ok(Config::embedded_default()),
    }
}

/// Logs to standard output in `format`, at the level of `RUST_LOG` (default `info`); with a
/// `tracer`, sends the library's decision spans to it too, whatever `RUST_LOG` says.
pub(crate) fn init_logging(format: LogFormat, tracer: Option<SdkTracer>) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .boxed(),
        _ => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
    };
    let spans = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(floodwall::trace::TARGET, tracing::Level::TRACE),
            )
    });
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .init();
}

pub(crate) async fn serve(
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
    let rlqs = match &config.rlqs {
        Some(rlqs) => Some(
            floodwall_server::listen(rlqs.listen)
                .with_context(|| format!("cannot listen on {} (RLQS)", rlqs.listen))?,
        ),
        None => None,
    };
    let listeners = floodwall_server::Listeners {
        main,
        admin,
        check,
        rls,
        rlqs,
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
