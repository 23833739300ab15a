//! `floodwall check`: one decision from the command line, asked of the store of a configuration
//! or of a running service.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use super::client::send;
use super::serve::load;

pub(crate) async fn check(
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
pub(crate) async fn ask_server(
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
