//! The service in this test process: `floodwall_server::run` on listeners bound to port 0, as the
//! binary runs it, stopped through its shutdown future. For tests that need no process of their
//! own (signals, exit codes and process-wide metrics do; see `binary.rs`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use floodwall_server::config::Config;
use floodwall_server::{Listeners, ServeError, run};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running service, stopped on drop.
pub(crate) struct Service {
    pub(crate) address: SocketAddr,
    /// The check API's own listener, when `[check] listen` gives it one.
    pub(crate) check_address: Option<SocketAddr>,
    /// The admin listener, when the configuration has one.
    pub(crate) admin_address: Option<SocketAddr>,
    /// The RLS listener, when the configuration has `[rls]` (on a port of its own, whatever
    /// `[rls] listen` says).
    pub(crate) rls_address: Option<SocketAddr>,
    /// The RLQS listener, when the configuration has `[rlqs]` (on a port of its own).
    pub(crate) rlqs_address: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Service {
    /// Serves the configuration in `text` (`[admin]` gets a listener of its own).
    pub(crate) async fn start(text: &str) -> Service {
        let config = Config::parse(text, Path::new("test.toml")).unwrap();
        Service::start_config(config).await
    }

    /// Serves `config` on 127.0.0.1, port 0.
    pub(crate) async fn start_config(config: Config) -> Service {
        let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = match config.admin {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let admin_address = admin.as_ref().map(|l| l.local_addr().unwrap());
        let check = match (config.check.enabled, config.check.listen) {
            (true, Some(listen)) => Some(TcpListener::bind(listen).await.unwrap()),
            _ => None,
        };
        let check_address = check.as_ref().map(|l| l.local_addr().unwrap());
        let rls = match &config.rls {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let rls_address = rls.as_ref().map(|l| l.local_addr().unwrap());
        let rlqs = match &config.rlqs {
            Some(_) => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let rlqs_address = rlqs.as_ref().map(|l| l.local_addr().unwrap());
        let address = main.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            main,
            admin,
            check,
            rls,
            rlqs,
        };
        let task = tokio::spawn(run(config, listeners, async {
            let _ = stopped.await;
        }));
        Service {
            address,
            check_address,
            rls_address,
            rlqs_address,
            admin_address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Asks the service to stop and waits until `run` returns what it returns.
    pub(crate) async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("run did not return after shutdown")
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
