//! `pingora-eval LISTEN UPSTREAM`: a pingora-proxy reverse proxy that decides one floodwall
//! check per request (policy "high", gcra, keyed by the peer's IP, in a memory store) and
//! answers 429 when denied, else forwards to UPSTREAM over pooled keep-alive connections.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use floodwall::{Algorithm, Check, MemoryStore, Policy};
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{ProxyHttp, Session};

struct Limited {
    store: MemoryStore,
    policies: [Policy; 1],
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Limited {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<bool> {
        let ip = session
            .client_addr()
            .and_then(|addr| addr.as_inet())
            .map(|addr| addr.ip().to_string())
            .unwrap_or_default();
        let Ok(check) = Check::new(&self.policies, ip.as_bytes(), 1) else {
            return Ok(false);
        };
        if self.store.decide_sync(&check).allowed {
            return Ok(false);
        }
        session.respond_error(429).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("LISTEN");
    let upstream = args
        .next()
        .expect("UPSTREAM")
        .parse()
        .expect("UPSTREAM is host:port");
    let policy = Policy::new(
        "high",
        Algorithm::Gcra,
        1_000_000_000,
        Duration::from_secs(1),
    )
    .expect("a valid policy");
    let limited = Limited {
        store: MemoryStore::new(),
        policies: [policy],
        upstream,
    };
    // Two worker threads, as floodwall's runtime and nginx's worker_processes have here.
    // PINGORA_WORK_STEALING=0 tries pingora's thread-per-core runtime instead.
    let conf = ServerConf {
        threads: 2,
        work_stealing: std::env::var("PINGORA_WORK_STEALING").map_or(true, |v| v != "0"),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, limited);
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
