//! `floodwall`: the service's command line. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use floodwall_server::config::{Config, LogFormat};
use floodwall_server::otlp::Telemetry;

use crate::cli::check::{ask_server, check};
use crate::cli::serve::{init_logging, load, serve};
use crate::cli::{Cli, Command, ConfigCommand, exit_on_usage_error};

mod cli;

// The service allocates a little per request in many places (headers, bodies, futures); mimalloc
// keeps those allocations thread-local where glibc's malloc takes arena locks and consolidates.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("floodwall: cannot start the runtime: {error}");
            return ExitCode::from(2);
        }
    };
    // The exporters start inside the runtime: their gRPC channels run on it.
    let telemetry = match served.as_ref().and_then(|config| config.telemetry.as_ref()) {
        Some(config) => match runtime.block_on(async { Telemetry::start(config) }) {
            Ok(telemetry) => Some(telemetry),
            Err(error) => {
                eprintln!("floodwall: [telemetry]: {error}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    init_logging(format, telemetry.as_ref().and_then(Telemetry::tracer));
    let telemetry = telemetry.map(|mut telemetry| {
        telemetry.install_metrics();
        telemetry
    });
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
            } => cli::admin::run(&server, &token_env, &action).await,
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
    // What the exporters hold goes out while the runtime that carries it still runs.
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    result.unwrap_or_else(|error| {
        eprintln!("floodwall: {}", report(&error));
        ExitCode::from(2)
    })
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
