"""The container image, built by scripts/image and run by a real podman: the demo through a
mapped port, a non-root process on a read-only root, SIGTERM drains an in-flight request, and
two containers on one redis-server admit exactly the limit between them.

scripts/test runs this with the image's binary set to the one the cargo tests built
(FLOODWALL_BIN): a release build would add minutes to CI, and the Containerfile copies either
the same way.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("FLOODWALL_TEST_IMAGE", "localhost/floodwall:test")
NONROOT = 65532
# Kubernetes' default grace period, and the Deployment's: the drain (4 s at most) fits in it.
GRACE_SECONDS = 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_answering(port: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status, _ = get(port, "/healthz")
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers /healthz on {port} after {within} s")


def get(port: int, path: str, timeout: float = 10.0) -> Tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def check(port: int, policy: str, key: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        body = json.dumps({"policy": policy, "key": key, "cost": 1})
        connection.request("POST", "/v1/check", body, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def podman_runtime() -> List[str]:
    """crun, podman's default runtime, refuses cgroups v1; runc runs on both."""
    try:
        kind = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        kind = ""
    return [] if kind == "cgroup2fs" else ["--runtime", "runc"]


class Container:
    """One `podman run -d` of the image, removed at the end."""

    def __init__(self, *options: str, command: Optional[List[str]] = None) -> None:
        run = ["podman", *podman_runtime(), "run", "-d", "--read-only",
               # podman's default limits exceed what this kind of machine allows.
               "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
               *options, IMAGE, *(command or [])]
        self.id = subprocess.run(run, capture_output=True, text=True, check=True).stdout.strip()

    def inspect(self, template: str) -> str:
        return subprocess.run(["podman", "inspect", "--format", template, self.id],
                              capture_output=True, text=True, check=True).stdout.strip()

    def logs(self) -> str:
        done = subprocess.run(["podman", "logs", self.id], capture_output=True, text=True)
        return done.stdout + done.stderr

    def stop(self, grace: int = GRACE_SECONDS) -> float:
        started = time.monotonic()
        subprocess.run(["podman", *podman_runtime(), "stop", "--time", str(grace), self.id],
                       capture_output=True, check=True)
        return time.monotonic() - started

    def remove(self) -> None:
        subprocess.run(["podman", *podman_runtime(), "rm", "--force", self.id],
                       capture_output=True)


@pytest.fixture(scope="module")
def image() -> str:
    environment = dict(os.environ, FLOODWALL_IMAGE=IMAGE)
    binary = os.environ.get("FLOODWALL_BIN")
    if binary:
        environment["FLOODWALL_IMAGE_BINARY"] = binary
    built = subprocess.run([str(REPO / "scripts" / "image")], env=environment,
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert built.stdout.strip() == IMAGE, "scripts/image prints the image's name"
    return IMAGE


@pytest.fixture
def containers() -> Iterator[List[Container]]:
    started: List[Container] = []
    yield started
    for container in started:
        container.remove()


def test_the_demo_answers_ten_times_then_429_through_a_mapped_port(image, containers):
    port = free_port()
    container = Container("-p", f"127.0.0.1:{port}:8080")
    containers.append(container)
    wait_answering(port)
    statuses = [get(port, "/")[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429], container.logs()


def test_the_service_runs_as_non_root_on_a_read_only_root(image, containers):
    port = free_port()
    container = Container("-p", f"127.0.0.1:{port}:8080")
    containers.append(container)
    wait_answering(port)
    assert container.inspect("{{.Config.User}}") == f"{NONROOT}:{NONROOT}"
    # The process itself, as the host's kernel sees it.
    pid = container.inspect("{{.State.Pid}}")
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
    assert uids == [str(NONROOT)] * 4 and gids == [str(NONROOT)] * 4
    root_mount = next(line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
                      if line.split()[4] == "/")
    assert "ro" in root_mount[5].split(","), root_mount
    assert Path(f"/proc/{pid}/exe").resolve().name == "floodwall"


class SlowUpstream:
    """An upstream on the host that answers after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                time.sleep(delay)
                body = b"slow but done"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HostRedis:
    def __init__(self, directory: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def shared_config(directory: Path, redis_port: int, upstream_port: int) -> Path:
    config = directory / "floodwall.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:8080"

[storage]
url = "redis://127.0.0.1:{redis_port}/0"
on_error = "deny"

[[policy]]
name = "shared"
algorithm = "sliding_window"
limit = 40
period = "1h"

[[policy]]
name = "roomy"
algorithm = "fixed_window"
limit = 1000
period = "1h"

[[route]]
match = "GET /slow"
key = "ip"
policies = ["roomy"]
upstream = "http://127.0.0.1:{upstream_port}"
""")
    # The container's user reads it through the mount.
    config.chmod(0o644)
    directory.chmod(0o755)
    return config


def on_host_network(config: Path, port: int) -> Container:
    """A container on the host's network, so that it reaches the host's redis-server and
    upstream on loopback, serving `config` (mounted read-only) on `port`."""
    return Container("--network", "host", "-v", f"{config}:/etc/floodwall/floodwall.toml:ro",
                     command=["serve", "--config", "/etc/floodwall/floodwall.toml",
                              "--listen", f"127.0.0.1:{port}"])


@pytest.fixture
def host() -> Iterator[Tuple[Path, HostRedis, SlowUpstream]]:
    with tempfile.TemporaryDirectory() as directory:
        redis = HostRedis(directory)
        upstream = SlowUpstream(delay=1.5)
        try:
            yield Path(directory), redis, upstream
        finally:
            upstream.close()
            redis.close()


def test_stop_drains_an_in_flight_request_within_the_grace_period(image, containers, host):
    directory, redis, upstream = host
    config = shared_config(directory, redis.port, upstream.port)
    port = free_port()
    container = on_host_network(config, port)
    containers.append(container)
    wait_answering(port)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(get, port, "/slow")
        time.sleep(0.5)  # the request is at the upstream now
        took = container.stop()
        status, body = in_flight.result()
    assert (status, body) == (200, b"slow but done"), container.logs()
    # SIGTERM, not the SIGKILL at the end of the grace period: the service stopped by itself.
    assert took < GRACE_SECONDS - 5, f"podman stop took {took:.1f} s"
    assert container.inspect("{{.State.ExitCode}}") == "0", container.logs()
    assert "floodwall stopped" in container.logs()


def test_two_containers_on_one_redis_admit_exactly_the_limit(image, containers, host):
    directory, redis, upstream = host
    config = shared_config(directory, redis.port, upstream.port)
    ports = [free_port(), free_port()]
    for port in ports:
        containers.append(on_host_network(config, port))
    for port in ports:
        wait_answering(port)
    attempts = 200
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: check(ports[i % 2], "shared", "one-key"),
                                 range(attempts)))
    assert statuses.count(200) == 40, statuses
    assert statuses.count(429) == attempts - 40, statuses
    # Both containers admitted some: the limit is shared, not met by one of them alone.
    assert 200 in statuses[0::2] and 200 in statuses[1::2], statuses
