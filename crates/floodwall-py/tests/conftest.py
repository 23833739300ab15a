"""Fixtures: real redis-server processes on free loopback ports, and the floodwall binary."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_pong(port: int, what: str) -> None:
    """Waits up to 10 s for a server on `port` to answer PING (a redis-server or a sentinel)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} on port {port} did not start")


class RedisServer:
    """A redis-server process on a loopback port that a test can kill and start again."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server was not found on PATH: run scripts/test, which installs it")
        self.port = free_port()
        self.directory = tempfile.TemporaryDirectory(prefix="floodwall-py-redis-")
        self.process: Optional[subprocess.Popen] = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.directory.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_pong(self.port, "redis-server")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def command(self, *args: str) -> bytes:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], check=True, capture_output=True
        ).stdout

    def close(self) -> None:
        self.kill()
        self.directory.cleanup()


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def shared_redis() -> Iterator[RedisServer]:
    """One server for the tests that never stop it; each uses its own key prefix."""
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest, shared_redis: RedisServer) -> str:
    return "memory://" if request.param == "memory" else shared_redis.url


def unique_prefix() -> str:
    return f"t{time.monotonic_ns()}"


def floodwall_binary() -> Path:
    path = Path(os.environ.get("FLOODWALL_BIN", REPO / "target" / "debug" / "floodwall"))
    if not path.exists():
        pytest.fail(f"the floodwall binary is not at {path}: run scripts/test (or cargo build)")
    return path


class Floodwall:
    """`floodwall serve` with a configuration file, on a free port."""

    def __init__(self, config: str) -> None:
        self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.config.write(config)
        self.config.close()
        self.process = subprocess.Popen(
            [str(floodwall_binary()), "serve", "--listen", "127.0.0.1:0", "--config", self.config.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "RUST_LOG": "info"},
        )
        self.address = self._wait_for_address()
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_address(self) -> str:
        assert self.process.stdout is not None
        early: List[str] = []
        self.admin_address = None
        for line in self.process.stdout:
            early.append(line)
            match = re.search(r"address=(\S+)", line) or re.search(r'"address":\s*"([^"]+)"', line)
            if match and "admin listening" in line:
                self.admin_address = match.group(1)
            elif match and "listening" in line and "check API" not in line:
                return match.group(1)
        raise RuntimeError(f"floodwall exited before listening: {early}")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        os.unlink(self.config.name)
