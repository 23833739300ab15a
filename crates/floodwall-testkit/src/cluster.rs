//! A real Redis Cluster of `redis-server` processes on loopback, created with `redis-cli --cluster`.

use std::io;
use std::time::Duration;

use crate::server::{RedisServer, cli_output, wait_until};
use crate::tls::{self, TestCertificates};

/// How long the cluster may take to agree that all slots are served.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A running cluster: `masters` masters (at least 3) with `replicas` replicas each. Dropping it
/// kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    masters: usize,
    /// The shared certificates of a TLS cluster; dropped after the nodes.
    tls_dir: Option<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts 3 masters without replicas.
    ///
    /// # Errors
    ///
    /// As [`RedisCluster::start_with`].
    pub fn start() -> io::Result<Self> {
        Self::start_with(3, 0)
    }

    /// Starts `masters` masters with `replicas` replicas each (`cluster-node-timeout 1000`,
    /// `cluster-require-full-coverage no`),
    /// assigns all 16 384 slots, and waits until every node reports `cluster_state:ok` and every
    /// replica has synchronised with its master.
    ///
    /// # Errors
    ///
    /// When fewer than 3 masters are asked for, a node does not start, or the cluster does not
    /// form within 30 s.
    pub fn start_with(masters: usize, replicas: usize) -> io::Result<Self> {
        Self::start_nodes(masters, replicas, None)
    }

    /// A 3-master cluster whose nodes also listen for TLS, with certificates from one throwaway
    /// CA ([`RedisCluster::tls_ca_pem`]); nodes talk TLS to each other on the cluster bus, and
    /// answer TLS clients with their TLS ports ([`RedisCluster::tls_url`]). Needs `openssl`.
    ///
    /// # Errors
    ///
    /// As [`RedisCluster::start_with`], or when the certificates cannot be made.
    pub fn start_tls() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("floodwall-tls-")
            .tempdir()?;
        let certificates = tls::generate(dir.path())?;
        let mut cluster = Self::start_nodes(3, 0, Some(certificates))?;
        cluster.tls_dir = Some(dir);
        Ok(cluster)
    }

    fn start_nodes(
        masters: usize,
        replicas: usize,
        tls: Option<TestCertificates>,
    ) -> io::Result<Self> {
        if masters < 3 {
            return Err(io::Error::other("a Redis Cluster needs at least 3 masters"));
        }
        let mut nodes = Vec::with_capacity(masters * (1 + replicas));
        for _ in 0..masters * (1 + replicas) {
            let mut builder = RedisServer::builder().cluster_node();
            if let Some(certificates) = &tls {
                builder = builder.tls_with(certificates.clone()).args([
                    "--tls-cluster",
                    "yes",
                    "--tls-replication",
                    "yes",
                ]);
            }
            nodes.push(
                builder
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "1000",
                        // A dead master takes only its own slots down.
                        "--cluster-require-full-coverage",
                        "no",
                    ])
                    .start()?,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .filter_map(RedisServer::port)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        cli_output(
            crate::server::cli_command()
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]),
        )?;
        let cluster = RedisCluster {
            nodes,
            masters,
            tls_dir: None,
        };
        cluster.wait_until_ok(FORM_TIMEOUT)?;
        // A replica that never completed its first sync is not eligible for promotion, so a
        // cluster is ready for failover tests only once every replica's link is up.
        wait_until(FORM_TIMEOUT, || {
            Ok(cluster.nodes.iter().all(|node| {
                node.cli(&["INFO", "replication"]).is_ok_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            }))
        })?;
        Ok(cluster)
    }

    /// Waits until every running node reports `cluster_state:ok`.
    ///
    /// # Errors
    ///
    /// When the cluster is not ok within `timeout`.
    pub fn wait_until_ok(&self, timeout: Duration) -> io::Result<()> {
        wait_until(timeout, || {
            Ok(self
                .nodes
                .iter()
                .filter(|node| node.pid().is_some())
                .all(|node| {
                    node.cli(&["CLUSTER", "INFO"])
                        .is_ok_and(|info| info.contains("cluster_state:ok"))
                }))
        })
    }

    /// A connection URL listing every node: `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .filter_map(RedisServer::port)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The TLS URL listing every node, for a cluster from [`RedisCluster::start_tls`]:
    /// `rediss+cluster://127.0.0.1:T1,…`.
    pub fn tls_url(&self) -> Option<String> {
        let hosts: Option<Vec<String>> = self
            .nodes
            .iter()
            .map(|node| node.tls_port().map(|port| format!("127.0.0.1:{port}")))
            .collect();
        hosts.map(|hosts| format!("rediss+cluster://{}", hosts.join(",")))
    }

    /// The PEM certificate of the CA that signed every node's certificate.
    ///
    /// # Errors
    ///
    /// When the cluster was started without TLS.
    pub fn tls_ca_pem(&self) -> io::Result<Vec<u8>> {
        match self.nodes.first() {
            Some(node) => node.tls_ca_pem(),
            None => Err(io::Error::other("no nodes")),
        }
    }

    /// Every node; the first `masters()` were created as masters.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One node, for faults (kill, pause, restart).
    pub fn node_mut(&mut self, index: usize) -> Option<&mut RedisServer> {
        self.nodes.get_mut(index)
    }

    /// How many masters the cluster was created with.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// Runs one command through `redis-cli -c` (follows redirections) against the first node.
    ///
    /// # Errors
    ///
    /// When `redis-cli` fails.
    pub fn cli(&self, args: &[&str]) -> io::Result<String> {
        let port = self
            .nodes
            .iter()
            .find(|node| node.pid().is_some())
            .and_then(RedisServer::port)
            .ok_or_else(|| io::Error::other("no running node"))?;
        cli_output(
            crate::server::cli_command()
                .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args),
        )
    }
}

impl RedisCluster {
    /// The index in [`nodes`](RedisCluster::nodes) of the master serving `hash_tag`'s slot: the
    /// one that accepts a write of `{hash_tag}` itself rather than redirecting.
    ///
    /// # Errors
    ///
    /// When no master accepts it.
    pub fn master_of(&self, hash_tag: &str) -> std::io::Result<usize> {
        let probe = format!("{{{hash_tag}}}:testkit-probe");
        for (index, node) in self.nodes.iter().enumerate().take(self.masters) {
            if node.cli(&["SET", &probe, "1", "PX", "1000"])? == "OK" {
                return Ok(index);
            }
        }
        Err(std::io::Error::other(format!(
            "no master serves {{{hash_tag}}}"
        )))
    }
}
