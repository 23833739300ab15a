//! Redis behind Sentinel on loopback: a master, its replicas and three sentinels, as real
//! `redis-server` processes (`--sentinel` for the sentinels).

use std::io;
use std::time::Duration;

use crate::server::{RedisServer, RedisServerBuilder, wait_until};
use crate::tls::{self, TestCertificates};

/// How long the set may take to form: replicas in sync, sentinels aware of each other.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A master with replicas, watched by sentinels (quorum 2, `down-after-milliseconds 1000`,
/// `failover-timeout 3000`). Dropping it kills every process.
#[derive(Debug)]
pub struct RedisSentinels {
    name: String,
    /// The data nodes: the first one started as the master.
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// The shared certificates of a TLS set; dropped after the processes.
    tls_dir: Option<tempfile::TempDir>,
}

impl RedisSentinels {
    /// The name the sentinels monitor the master under.
    pub const MASTER_NAME: &'static str = "floodwall-master";

    /// Starts a master, `replicas` replicas and `sentinels` sentinels, and waits until every
    /// replica is in sync and every sentinel knows the replicas and the other sentinels.
    ///
    /// # Errors
    ///
    /// When a process does not start or the set does not form within 30 s.
    pub fn start(replicas: usize, sentinels: usize) -> io::Result<Self> {
        Self::start_with(replicas, sentinels, None)
    }

    /// As [`RedisSentinels::start`], with every process also listening for TLS (certificates
    /// from one throwaway CA, [`RedisSentinels::tls_ca_pem`]): replicas follow the master, and
    /// sentinels watch it, over TLS; clients reach the sentinels at [`RedisSentinels::tls_url`].
    /// Needs `openssl`.
    ///
    /// # Errors
    ///
    /// As [`RedisSentinels::start`], or when the certificates cannot be made.
    pub fn start_tls(replicas: usize, sentinels: usize) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("floodwall-tls-")
            .tempdir()?;
        let certificates = tls::generate(dir.path())?;
        let mut set = Self::start_with(replicas, sentinels, Some(certificates))?;
        set.tls_dir = Some(dir);
        Ok(set)
    }

    fn start_with(
        replicas: usize,
        sentinels: usize,
        tls: Option<TestCertificates>,
    ) -> io::Result<Self> {
        // Over TLS, replicas and sentinels reach the master (and announce themselves) on the
        // TLS ports.
        let builder = || match &tls {
            Some(certificates) => RedisServer::builder()
                .tls_with(certificates.clone())
                .args(["--tls-replication", "yes"]),
            None => RedisServerBuilder::default(),
        };
        let master = builder().start()?;
        let master_port = match tls {
            Some(_) => master.tls_port(),
            None => master.port(),
        }
        .ok_or_else(|| io::Error::other("the master has no TCP port"))?;
        let mut nodes = vec![master];
        for _ in 0..replicas {
            nodes.push(
                builder()
                    .args(["--replicaof", "127.0.0.1", &master_port.to_string()])
                    .start()?,
            );
        }
        let name = Self::MASTER_NAME;
        let quorum = sentinels.div_ceil(2).max(1);
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        let mut watching = Vec::with_capacity(sentinels);
        for _ in 0..sentinels {
            watching.push(builder().sentinel(config.clone()).start()?);
        }
        let set = RedisSentinels {
            name: name.to_owned(),
            nodes,
            sentinels: watching,
            tls_dir: None,
        };
        set.wait_until_formed(FORM_TIMEOUT)?;
        Ok(set)
    }

    /// Waits until every replica is in sync with the master and every running sentinel sees
    /// every running replica and the other running sentinels.
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_until_formed(&self, timeout: Duration) -> io::Result<()> {
        let replicas = self.running_nodes() - 1;
        let others = self.running_sentinels().saturating_sub(1);
        wait_until(timeout, || {
            let synced = self.nodes.iter().filter(|n| n.pid().is_some()).all(|node| {
                node.cli(&["INFO", "replication"]).is_ok_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            });
            let aware = self
                .sentinels
                .iter()
                .filter(|s| s.pid().is_some())
                .all(|sentinel| {
                    let Ok(master) = sentinel.cli(&["SENTINEL", "MASTER", &self.name]) else {
                        return false;
                    };
                    field(&master, "num-slaves") == Some(replicas)
                        && field(&master, "num-other-sentinels") == Some(others)
                        && !master.contains("s_down")
                });
            Ok(synced && aware)
        })
    }

    fn running_nodes(&self) -> usize {
        self.nodes.iter().filter(|n| n.pid().is_some()).count()
    }

    fn running_sentinels(&self) -> usize {
        self.sentinels.iter().filter(|s| s.pid().is_some()).count()
    }

    /// `redis+sentinel://127.0.0.1:P1,…/MASTER_NAME`.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .filter_map(RedisServer::port)
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{}", sentinels.join(","), self.name)
    }

    /// The `rediss+sentinel://` URL of the sentinels' TLS ports, for a set from
    /// [`RedisSentinels::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        let sentinels: Option<Vec<String>> = self
            .sentinels
            .iter()
            .map(|s| s.tls_port().map(|port| format!("127.0.0.1:{port}")))
            .collect();
        sentinels.map(|s| format!("rediss+sentinel://{}/{}", s.join(","), self.name))
    }

    /// The PEM certificate of the CA that signed every process's certificate.
    ///
    /// # Errors
    ///
    /// When the set was started without TLS.
    pub fn tls_ca_pem(&self) -> io::Result<Vec<u8>> {
        match self.nodes.first() {
            Some(node) => node.tls_ca_pem(),
            None => Err(io::Error::other("no nodes")),
        }
    }

    /// The index of the data node listening on `port` (plain or TLS).
    fn node_on(&self, port: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.port() == Some(port) || node.tls_port() == Some(port))
    }

    /// The data nodes, the first started as the master.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// One data node, to kill, pause or restart.
    pub fn node_mut(&mut self, index: usize) -> Option<&mut RedisServer> {
        self.nodes.get_mut(index)
    }

    /// The sentinels.
    pub fn sentinels(&self) -> &[RedisServer] {
        &self.sentinels
    }

    /// One sentinel, to kill or restart.
    pub fn sentinel_mut(&mut self, index: usize) -> Option<&mut RedisServer> {
        self.sentinels.get_mut(index)
    }

    /// The index in [`RedisSentinels::nodes`] of the master the first answering sentinel names.
    ///
    /// # Errors
    ///
    /// When no sentinel answers, or it names no node of this set.
    pub fn master_index(&self) -> io::Result<usize> {
        let answer = self
            .sentinels
            .iter()
            .filter(|s| s.pid().is_some())
            .find_map(|s| {
                s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])
                    .ok()
            })
            .ok_or_else(|| io::Error::other("no sentinel answers"))?;
        let port: u16 = answer
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("no master address in {answer:?}")))?;
        self.node_on(port)
            .ok_or_else(|| io::Error::other(format!("port {port} is not a node of this set")))
    }

    /// Waits until every running sentinel names a master other than node `old`, and that node
    /// says it is the master.
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`.
    pub fn wait_for_new_master(&self, old: usize, timeout: Duration) -> io::Result<usize> {
        let mut found = old;
        wait_until(timeout, || {
            let named: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .filter(|s| s.pid().is_some())
                .map(|s| {
                    s.cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.name])
                        .ok()
                        .and_then(|a| a.lines().nth(1).and_then(|p| p.trim().parse().ok()))
                })
                .collect();
            let Some(Some(port)) = named.first().copied() else {
                return Ok(false);
            };
            let Some(index) = self.node_on(port) else {
                return Ok(false);
            };
            if named.iter().any(|p| *p != Some(port)) || index == old {
                return Ok(false);
            }
            found = index;
            Ok(self.nodes[index]
                .cli(&["ROLE"])
                .is_ok_and(|role| role.starts_with("master")))
        })?;
        Ok(found)
    }

    /// Asks a sentinel for a failover now (`SENTINEL FAILOVER`), and waits until every sentinel
    /// names the new master, and it has taken the role. Returns the new master's index.
    ///
    /// # Errors
    ///
    /// When the sentinel refuses, or the failover does not finish within 30 s.
    pub fn failover(&self) -> io::Result<usize> {
        let old = self.master_index()?;
        let sentinel = self
            .sentinels
            .iter()
            .find(|s| s.pid().is_some())
            .ok_or_else(|| io::Error::other("no sentinel runs"))?;
        let answer = sentinel.cli(&["SENTINEL", "FAILOVER", &self.name])?;
        if answer != "OK" {
            return Err(io::Error::other(format!("SENTINEL FAILOVER: {answer}")));
        }
        self.wait_for_new_master(old, FORM_TIMEOUT)
    }
}

/// The value after `name` in `redis-cli`'s one-item-per-line rendering of a flat reply.
fn field(reply: &str, name: &str) -> Option<usize> {
    let mut lines = reply.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line == name {
            return lines.next().and_then(|value| value.parse().ok());
        }
    }
    None
}
