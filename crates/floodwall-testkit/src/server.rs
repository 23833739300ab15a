//! A real `redis-server` process on a free loopback port or a unix socket, killed on drop.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::tls::{self, TestCertificates};

/// How long a starting server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do on a machine without redis-server: the error names the program it tried, so a
/// wrong `FLOODWALL_REDIS_SERVER` (a relative path, say) is told apart from a missing install.
pub(crate) fn not_found(error: io::Error, variable: &str, default: &str) -> io::Error {
    if error.kind() != io::ErrorKind::NotFound {
        return error;
    }
    let tried = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{tried:?} was not found ({variable} or PATH; a relative path is resolved from the \
             crate's directory): run scripts/test (it installs redis on Debian/Ubuntu as root) \
             or `sudo apt-get install -y redis-server redis-tools`"
        ),
    )
}

/// The server the tests run: `FLOODWALL_REDIS_SERVER` when set (a `valkey-server`, say),
/// otherwise `redis-server` on PATH.
pub(crate) fn server_command() -> Command {
    Command::new(
        std::env::var_os("FLOODWALL_REDIS_SERVER").unwrap_or_else(|| "redis-server".into()),
    )
}

/// The client the tests run beside it: `FLOODWALL_REDIS_CLI` when set, otherwise `redis-cli`.
pub(crate) fn cli_command() -> Command {
    Command::new(std::env::var_os("FLOODWALL_REDIS_CLI").unwrap_or_else(|| "redis-cli".into()))
}

/// Where a server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `127.0.0.1:port`.
    Tcp(u16),
    /// A unix socket.
    Unix(PathBuf),
}

/// Options for a [`RedisServer`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    unix_socket: bool,
    args: Vec<String>,
    needs_bus_port: bool,
    tls: bool,
    tls_certificates: Option<TestCertificates>,
    sentinel_config: Option<String>,
}

impl RedisServerBuilder {
    /// Listen on a unix socket in the server's temporary directory instead of a TCP port.
    #[must_use]
    pub fn unix_socket(mut self) -> Self {
        self.unix_socket = true;
        self
    }

    /// Pass extra `redis-server` arguments, e.g. `["--requirepass", "secret"]`.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also listen for TLS on a second loopback port ([`RedisServer::tls_url`]), with a
    /// certificate for `localhost` and `127.0.0.1` signed by a throwaway CA
    /// ([`RedisServer::tls_ca_pem`]). Clients may present a certificate but need not. Needs the
    /// `openssl` command.
    #[must_use]
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// As [`RedisServerBuilder::tls`], with certificates made once for several servers (the
    /// nodes of one cluster must trust each other).
    #[must_use]
    pub(crate) fn tls_with(mut self, certificates: TestCertificates) -> Self {
        self.tls = true;
        self.tls_certificates = Some(certificates);
        self
    }

    /// Run a sentinel (`redis-server sentinel.conf --sentinel`) with this configuration instead
    /// of a data node. The sentinel rewrites the file as it learns, and a restart keeps it.
    #[must_use]
    pub(crate) fn sentinel(mut self, config: String) -> Self {
        self.sentinel_config = Some(config);
        self
    }

    /// Pick a port whose cluster bus port (`port + 10000`) is free too.
    #[must_use]
    pub(crate) fn cluster_node(mut self) -> Self {
        self.needs_bus_port = true;
        self
    }

    /// Starts the server and waits until it answers PING.
    ///
    /// # Errors
    ///
    /// When `redis-server` is missing (the message says how to install it), cannot start, or does
    /// not answer within 10 s (the message holds its log).
    pub fn start(self) -> io::Result<RedisServer> {
        let mut dir = tempfile::Builder::new()
            .prefix("floodwall-redis-")
            .tempdir()?;
        let mut last_error = None;
        // A free port can be taken by another process between our probe and redis's bind.
        for _ in 0..5 {
            let endpoint = if self.unix_socket {
                Endpoint::Unix(dir.path().join("redis.sock"))
            } else {
                Endpoint::Tcp(free_port(self.needs_bus_port)?)
            };
            let tls = if self.tls {
                Some(TlsListener {
                    port: free_port(false)?,
                    certificates: match &self.tls_certificates {
                        Some(certificates) => certificates.clone(),
                        None => tls::generate(dir.path())?,
                    },
                })
            } else {
                None
            };
            let mut server = RedisServer {
                child: None,
                endpoint,
                dir,
                args: self.args.clone(),
                tls,
                sentinel: self.sentinel_config.is_some(),
            };
            if let Some(config) = &self.sentinel_config {
                fs::write(server.sentinel_config_path(), config)?;
            }
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(error) => {
                    last_error = Some(error);
                    server.stop_process();
                    dir = tempfile::Builder::new()
                        .prefix("floodwall-redis-")
                        .tempdir()?;
                    drop(server);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }
}

/// A running `redis-server` (no persistence, debug commands enabled from loopback). Dropping it
/// kills the process and waits for it; if the thread is panicking, its log is printed first.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    endpoint: Endpoint,
    dir: TempDir,
    args: Vec<String>,
    tls: Option<TlsListener>,
    /// A sentinel, whose configuration file is in `dir`.
    sentinel: bool,
}

/// The TLS port of a server started with [`RedisServerBuilder::tls`].
#[derive(Debug)]
struct TlsListener {
    port: u16,
    certificates: TestCertificates,
}

impl RedisServer {
    /// Starts a server on a free loopback port.
    ///
    /// # Errors
    ///
    /// As [`RedisServerBuilder::start`].
    pub fn start() -> io::Result<Self> {
        Self::builder().start()
    }

    /// Options for a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Where the server listens.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The TCP port, if it listens on one.
    pub fn port(&self) -> Option<u16> {
        match self.endpoint {
            Endpoint::Tcp(port) => Some(port),
            Endpoint::Unix(_) => None,
        }
    }

    /// A connection URL: `redis://127.0.0.1:PORT` or `redis+unix:///path/to/redis.sock`.
    pub fn url(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(port) => format!("redis://127.0.0.1:{port}"),
            Endpoint::Unix(path) => format!("redis+unix://{}", path.display()),
        }
    }

    /// The TLS port, for a server started with [`RedisServerBuilder::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls.as_ref().map(|tls| tls.port)
    }

    /// The `rediss://` URL of the TLS port, for a server started with [`RedisServerBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|tls| format!("rediss://localhost:{}", tls.port))
    }

    /// The PEM certificate of the CA that signed the TLS port's certificate.
    ///
    /// # Errors
    ///
    /// When the server has no TLS port, or the file cannot be read.
    pub fn tls_ca_pem(&self) -> io::Result<Vec<u8>> {
        match &self.tls {
            Some(tls) => fs::read(&tls.certificates.ca),
            None => Err(io::Error::other("this server was started without .tls()")),
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn sentinel_config_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.conf")
    }

    /// Runs one command through `redis-cli` and returns its raw output, trimmed.
    ///
    /// # Errors
    ///
    /// When `redis-cli` cannot run or exits unsuccessfully.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let mut command = cli_command();
        match &self.endpoint {
            Endpoint::Tcp(port) => command.args(["-h", "127.0.0.1", "-p", &port.to_string()]),
            Endpoint::Unix(path) => command.arg("-s").arg(path),
        };
        cli_output(command.args(args))
    }

    /// Whether the server answers PING.
    pub fn ping(&self) -> bool {
        ping(&self.endpoint).unwrap_or(false)
    }

    /// Kills the process with SIGKILL and waits for it; the endpoint stays reserved for
    /// [`restart`](RedisServer::restart).
    pub fn kill(&mut self) {
        self.stop_process();
    }

    /// Starts the server again on the same endpoint (after [`kill`](RedisServer::kill)), and
    /// waits until it answers.
    ///
    /// # Errors
    ///
    /// As [`RedisServerBuilder::start`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop_process();
        self.spawn()
    }

    /// Freezes the process with SIGSTOP: it keeps its sockets but answers nothing.
    ///
    /// # Errors
    ///
    /// When `kill` cannot signal the process.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("-STOP")
    }

    /// Resumes a paused process with SIGCONT.
    ///
    /// # Errors
    ///
    /// When `kill` cannot signal the process.
    pub fn resume(&self) -> io::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill {signal} {pid} failed")))
        }
    }

    fn spawn(&mut self) -> io::Result<()> {
        let mut command = server_command();
        if self.sentinel {
            command.arg(self.sentinel_config_path()).arg("--sentinel");
        }
        match &self.endpoint {
            Endpoint::Tcp(port) => {
                command.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            }
            Endpoint::Unix(path) => command.args(["--port", "0"]).arg("--unixsocket").arg(path),
        };
        if !self.sentinel {
            command
                .args(["--save", "", "--appendonly", "no"])
                .args(["--enable-debug-command", "local"]);
        }
        command
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(&self.args);
        if let Some(tls) = &self.tls {
            command
                .args([
                    "--tls-port",
                    &tls.port.to_string(),
                    "--tls-auth-clients",
                    "optional",
                ])
                .arg("--tls-cert-file")
                .arg(&tls.certificates.server_certificate)
                .arg("--tls-key-file")
                .arg(&tls.certificates.server_key)
                .arg("--tls-ca-cert-file")
                .arg(&tls.certificates.ca);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = command
            .spawn()
            .map_err(|error| not_found(error, "FLOODWALL_REDIS_SERVER", "redis-server"))?;
        self.child = Some(child);
        wait_until(START_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(io::Error::other(format!(
                    "redis-server exited with {status}; its log:\n{}",
                    self.log()
                )));
            }
            Ok(ping(&self.endpoint).unwrap_or(false))
        })
        .map_err(|error| io::Error::other(format!("{error}; redis log:\n{}", self.log())))
    }

    fn stop_process(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- redis-server {} log ---\n{}", self.url(), self.log());
        }
        self.stop_process();
    }
}

/// A loopback port that is free now (and, for cluster nodes, whose bus port is free too).
fn free_port(with_bus_port: bool) -> io::Result<u16> {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        if !with_bus_port {
            return Ok(port);
        }
        let Some(bus) = port.checked_add(10_000) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free loopback port found"))
}

fn ping(endpoint: &Endpoint) -> io::Result<bool> {
    const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
    let mut reply = [0u8; 7];
    let timeout = Some(Duration::from_millis(500));
    match endpoint {
        Endpoint::Tcp(port) => {
            let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, *port))?;
            stream.set_read_timeout(timeout)?;
            stream.write_all(PING)?;
            stream.read_exact(&mut reply)?;
        }
        Endpoint::Unix(path) => {
            let mut stream = UnixStream::connect(path)?;
            stream.set_read_timeout(timeout)?;
            stream.write_all(PING)?;
            stream.read_exact(&mut reply)?;
        }
    }
    Ok(&reply == b"+PONG\r\n")
}

/// Runs a prepared `redis-cli` command and returns its stdout, trimmed.
pub(crate) fn cli_output(command: &mut Command) -> io::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| not_found(error, "FLOODWALL_REDIS_CLI", "redis-cli"))?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "redis-cli failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Polls `ready` every 20 ms until it says yes, fails, or `timeout` passes. For waiting on real
/// processes (a server starting, a cluster failing over), never for a test's own time to pass.
///
/// # Errors
///
/// The first error `ready` returns, or a timeout.
#[allow(clippy::disallowed_methods)] // waiting for a real process, not for a test's time to pass
pub fn wait_until(
    timeout: Duration,
    mut ready: impl FnMut() -> io::Result<bool>,
) -> io::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("not ready within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
