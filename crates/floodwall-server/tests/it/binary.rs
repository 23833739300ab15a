//! The real `floodwall` binary, spawned as a user would run it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// A running `floodwall serve`, killed on drop.
pub(crate) struct Floodwall {
    child: Child,
    pub(crate) address: SocketAddr,
    /// The admin listener's address, when the configuration has one.
    pub(crate) admin: Option<SocketAddr>,
    /// The RLS listener, when the configuration has `[rls]`.
    pub(crate) rls: Option<SocketAddr>,
    /// The RLQS listener's address, when `[rlqs]` is configured.
    pub(crate) rlqs: Option<SocketAddr>,
    /// Every log line, as the process writes them.
    log: Arc<Mutex<Vec<String>>>,
}

impl Floodwall {
    /// Starts `floodwall serve --listen 127.0.0.1:0 [--config FILE]` and waits for its address.
    pub(crate) fn serve(config: Option<&Path>) -> Floodwall {
        Self::serve_with(config, &[], false)
    }

    /// As [`Floodwall::serve`], with environment variables, waiting for the admin listener too
    /// when `admin` is set.
    pub(crate) fn serve_with(
        config: Option<&Path>,
        env: &[(&str, &str)],
        admin: bool,
    ) -> Floodwall {
        let mut command = Command::new(env!("CARGO_BIN_EXE_floodwall"));
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.envs(env.iter().copied());
        Self::spawn(command, admin)
    }

    /// As [`Floodwall::serve_with`] with `admin`, in a process that may open at most
    /// `fd_limit` file descriptors (soft and hard limit alike).
    pub(crate) fn serve_with_fd_limit(config: &Path, fd_limit: u64) -> Floodwall {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n {fd_limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_floodwall"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config);
        Self::spawn(command, true)
    }

    /// Runs `command` (a `floodwall serve`) and waits for its listeners' addresses.
    fn spawn(mut command: Command, admin: bool) -> Floodwall {
        let mut child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut address, mut admin_address, mut rls_address, mut rlqs_address) =
            (None, None, None, None);
        let mut early = Vec::new();
        // The main listener is announced last, after the admin and RLS ones.
        while address.is_none() {
            let line = lines
                .next()
                .expect("floodwall exited before listening")
                .unwrap();
            early.push(line.clone());
            if let Some(parsed) = listening_address(&line) {
                if line.contains("admin listening") {
                    admin_address = Some(parsed);
                } else if line.contains("RLQS listening") {
                    rlqs_address = Some(parsed);
                } else if line.contains("RLS listening") {
                    rls_address = Some(parsed);
                } else if !line.contains("check API listening") {
                    address = Some(parsed);
                }
            }
        }
        assert!(
            !admin || admin_address.is_some(),
            "no admin listener in {early:#?}"
        );
        let address = address.unwrap();
        // Keep draining the log so the child never blocks on a full pipe.
        let log = Arc::new(Mutex::new(early));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                kept.lock().unwrap().push(line);
            }
        });
        Floodwall {
            child,
            address,
            admin: admin_address,
            rls: rls_address,
            rlqs: rlqs_address,
            log,
        }
    }

    /// Whether a log line read so far contains `needle`.
    pub(crate) fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Waits up to 5 s for a log line containing `needle` and returns it.
    pub(crate) async fn log_line(&self, needle: &str) -> String {
        self.log_line_within(needle, std::time::Duration::from_secs(5))
            .await
    }

    /// Every log line so far that contains `needle`.
    pub(crate) fn log_lines(&self, needle: &str) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|l| l.contains(needle)).cloned().collect()
    }

    /// Waits up to `within` for a log line containing `needle` and returns it.
    pub(crate) async fn log_line_within(
        &self,
        needle: &str,
        within: std::time::Duration,
    ) -> String {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(line) = self.log.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            assert!(
                tokio::time::Instant::now() < until,
                "no log line with {needle:?} in {:#?}",
                self.log.lock().unwrap()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin.expect("no admin listener"))
    }

    /// The admin listener's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        let response = reqwest::get(self.admin_url("/metrics")).await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Sends a signal (e.g. `-HUP`, `-TERM`) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The process's resident memory, in bytes.
    pub(crate) fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }

    /// The process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit and returns its exit code.
    pub(crate) fn wait(&mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }
}

impl Drop for Floodwall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary file holding `text`, removed on drop: a configuration to pass to the binary.
/// The address of a "listening" line, in text (`address=…`) or JSON (`"address": "…"`).
fn listening_address(line: &str) -> Option<SocketAddr> {
    // Other lines carry addresses too (a Redis master found by the sentinels).
    if !line.contains("listening") {
        return None;
    }
    if line.starts_with('{') {
        let object: serde_json::Value = serde_json::from_str(line).ok()?;
        return object["address"].as_str()?.parse().ok();
    }
    let (_, rest) = line.split_once("address=")?;
    rest.split_whitespace().next()?.parse().ok()
}

pub(crate) fn config_file(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

/// Runs the binary to completion.
pub(crate) fn floodwall(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_floodwall"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_check_prints_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"nowhere\"\n\n[[policy]]\nname = \"p\"\nalgorithm = \"leaky\"\nlimit = 0\nperiod = \"1m\"\n",
    )
    .unwrap();
    let output = floodwall(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2:10: invalid listen address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:6:13: unknown algorithm"),
        "{stderr}"
    );
    assert!(stderr.contains("bad.toml:7:9: limit 0"), "{stderr}");

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../floodwall.example.toml");
    let output = floodwall(&["config", "check", example.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

/// `floodwall config example` prints the shipped example, which validates as it is: an
/// installed binary carries what its hints point to.
#[test]
fn config_example_prints_a_valid_file() {
    let printed = floodwall(&["config", "example"]);
    assert_eq!(printed.status.code(), Some(0));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../floodwall.example.toml");
    assert_eq!(printed.stdout, std::fs::read(&shipped).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("floodwall.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let checked = floodwall(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
}

/// `config check` warns, and still passes, when `[rls]` is served on a Redis whose deadline is
/// longer than Envoy's default 20 ms; a storage timeout within it draws no warning.
#[test]
fn config_check_warns_of_a_storage_timeout_longer_than_envoys() {
    let with_timeout = |timeout: &str| {
        config_file(&format!(
            "[storage]\nurl = \"redis://127.0.0.1:6379\"\ntimeout = \"{timeout}\"\n\
             [[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 1\nperiod = \"1s\"\n\
             [rls]\nlisten = \"127.0.0.1:0\"\n\
             [[rls.rule]]\ndomain = \"d\"\ndescriptor = [\"k\"]\npolicies = [\"p\"]\n"
        ))
    };
    let slow = with_timeout("50ms");
    let checked = floodwall(&["config", "check", slow.path().to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert!(
        stderr.contains("warning: [storage] timeout is 50ms, longer than Envoy's default"),
        "{stderr}"
    );
    assert!(stderr.contains("timeout = \"15ms\""), "{stderr}");
    let fitting = with_timeout("15ms");
    let checked = floodwall(&["config", "check", fitting.path().to_str().unwrap()]);
    assert_eq!(checked.status.code(), Some(0), "{checked:?}");
    assert!(checked.stderr.is_empty(), "{checked:?}");
}

/// Completions and the man page come from the command-line definitions themselves, so they
/// name every subcommand.
#[test]
fn completions_and_the_man_page_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = floodwall(&["completions", shell]);
        assert_eq!(script.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(script.stdout).unwrap();
        for subcommand in ["serve", "check", "config"] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
    let man = floodwall(&["man"]);
    assert_eq!(man.status.code(), Some(0));
    let man = String::from_utf8(man.stdout).unwrap();
    assert!(man.contains(".TH floodwall 1"), "{man}");
    assert!(
        man.contains("serve") && man.contains("completions"),
        "{man}"
    );
}

#[test]
fn serve_refuses_an_invalid_file_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\non_error = \"maybe\"\n").unwrap();
    let output = floodwall(&["serve", "--config", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml:2:12: unknown on_error \"maybe\""),
        "{stderr}"
    );
}

#[test]
fn check_decides_one_request_with_exit_codes() {
    let redis = floodwall_testkit::RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.toml");
    std::fs::write(
        &file,
        format!(
            "[storage]\nurl = \"{}\"\n[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1h\"\n",
            redis.url()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let allowed = floodwall(&["check", "--config", file, "--policy", "p", "--key", "k"]);
    assert_eq!(allowed.status.code(), Some(0));
    let decision: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
    assert_eq!(decision["allowed"], true);
    assert_eq!(decision["remaining"], 4);
    // A second run sees the first one's count (the store is shared), and --peek takes nothing.
    for _ in 0..2 {
        let peeked = floodwall(&[
            "check", "--config", file, "--policy", "p", "--key", "k", "--peek",
        ]);
        assert_eq!(peeked.status.code(), Some(0));
        let decision: serde_json::Value = serde_json::from_slice(&peeked.stdout).unwrap();
        assert_eq!(decision["remaining"], 4);
    }
    let impossible = floodwall(&[
        "check", "--config", file, "--policy", "p", "--key", "k", "--cost", "6",
    ]);
    assert_eq!(impossible.status.code(), Some(2));
    let unknown = floodwall(&["check", "--config", file, "--policy", "nope", "--key", "k"]);
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("defined: p"), "{stderr}");
}

/// `floodwall check --policy p --key k` on a configuration of `storage` and one policy `p`.
fn check_on(storage: &str) -> Output {
    let policy = "[[policy]]\nname = \"p\"\nalgorithm = \"gcra\"\nlimit = 5\nperiod = \"1s\"\n";
    let file = config_file(&format!("{storage}{policy}"));
    let config = file.path().to_str().unwrap();
    floodwall(&["check", "--config", config, "--policy", "p", "--key", "k"])
}

/// A memory store lives in the service's process: `floodwall check` refuses to decide in a
/// fresh one of its own (which could never deny) and says how to ask the service instead.
#[test]
fn check_refuses_a_memory_store_and_names_the_server_flag() {
    let refused = check_on("");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--server"), "{stderr}");
}

/// An unreachable Redis is one line saying so, with the cause (connection refused).
#[test]
fn check_on_an_unreachable_redis_says_why_once() {
    let port = crate::outages::closed_port();
    let failed = check_on(&format!("[storage]\nurl = \"redis://127.0.0.1:{port}\"\n"));
    assert_eq!(failed.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(
        failed.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&failed.stdout)
    );
}

/// `--server` asks a running service, whose memory store does deny.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_asks_a_running_service_with_server() {
    let service = crate::in_process::Service::start(
        "[[policy]]\nname = \"p\"\nalgorithm = \"fixed_window\"\nlimit = 1\nperiod = \"1h\"\n",
    )
    .await;
    let server = format!("http://{}", service.address);
    let ask = |extra: &'static [&'static str]| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["check", "--server", &server, "--policy", "p", "--key", "k"];
            args.extend_from_slice(extra);
            floodwall(&args)
        })
    };
    let peeked = ask(&["--peek"]).await.unwrap();
    assert_eq!(peeked.status.code(), Some(0));
    let first = ask(&[]).await.unwrap();
    assert_eq!(first.status.code(), Some(0));
    let second = ask(&[]).await.unwrap();
    assert_eq!(second.status.code(), Some(1));
    let decision: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(decision["allowed"], false);
}

/// The help says what a bare `floodwall` does, and the service's flags given before `serve`
/// get a usage error that shows where they go.
#[test]
fn the_command_line_teaches_its_own_use() {
    let help = floodwall(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("A bare `floodwall` serves the embedded demo on 127.0.0.1:8080"),
        "{help}"
    );
    for misplaced in [
        &["--config", "floodwall.toml"][..],
        &["--listen=127.0.0.1:1"],
    ] {
        let refused = floodwall(misplaced);
        assert_eq!(refused.status.code(), Some(2));
        let stderr = String::from_utf8(refused.stderr).unwrap();
        assert!(stderr.contains("unexpected argument"), "{stderr}");
        assert!(
            stderr.contains("floodwall serve --config FILE [--listen ADDR]"),
            "{stderr}"
        );
    }
    let bad = floodwall(&["serve", "--listen", "8080"]);
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(stderr.contains("localhost:8080"), "{stderr}");
}
