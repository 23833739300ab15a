"""Redis behind Sentinel from Python: `Limiter("redis+sentinel://…")` finds the master through a
real sentinel process, counts exactly from several threads, and refuses a master name the
sentinel does not monitor; `wait_replicas` answers only what replicas confirmed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest

import floodwall

from conftest import RedisServer, free_port, unique_prefix, wait_for_pong

MASTER_NAME = "floodwall-py-master"


class Sentinel:
    """One `redis-server --sentinel` process watching `master`."""

    def __init__(self, master: RedisServer) -> None:
        self.port = free_port()
        self.directory = tempfile.TemporaryDirectory(prefix="floodwall-py-sentinel-")
        config = Path(self.directory.name) / "sentinel.conf"
        config.write_text(
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
        )
        self.process = subprocess.Popen(
            ["redis-server", str(config), "--sentinel", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", self.directory.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_pong(self.port, "the sentinel")

    def url(self, name: str = MASTER_NAME) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{name}/0"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.directory.cleanup()


@pytest.fixture
def sentinel(redis: RedisServer) -> Iterator[Sentinel]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server was not found on PATH: run scripts/test, which installs it")
    watching = Sentinel(redis)
    yield watching
    watching.close()


def test_a_limiter_through_a_sentinel_counts_exactly_from_many_threads(sentinel: Sentinel):
    limiter = floodwall.Limiter(sentinel.url(), prefix=unique_prefix())
    policy = floodwall.Policy("through-sentinel", "50/hour")

    def admitted(_: int) -> int:
        return sum(limiter.check(policy, "shared").allowed for _ in range(20))

    with ThreadPoolExecutor(max_workers=8) as pool:
        total = sum(pool.map(admitted, range(8)))
    assert total == 50
    decision = limiter.check(policy, "shared")
    assert not decision.allowed and decision.counted


def test_a_master_name_the_sentinel_does_not_monitor_is_a_config_error(sentinel: Sentinel):
    with pytest.raises(floodwall.ConfigError, match="no-such-master"):
        floodwall.Limiter(sentinel.url("no-such-master"))


def test_a_sentinel_url_without_a_master_name_is_a_config_error():
    with pytest.raises(floodwall.ConfigError, match="no master name"):
        floodwall.Limiter("redis+sentinel://127.0.0.1:26379")


def test_wait_replicas_with_no_replica_answers_per_on_error(redis: RedisServer):
    limiter = floodwall.Limiter(
        redis.url, wait_replicas=1, timeout=1.0, on_error="deny", prefix=unique_prefix()
    )
    # Redis may answer a WAIT's shortfall a tick late: past the deadline, it is a timeout.
    with pytest.raises(floodwall.StoreUnavailable, match="replicas|did not answer"):
        limiter.check(floodwall.Policy("p", "5/hour"), "k")


def test_wait_replicas_is_an_option_of_a_redis_store():
    with pytest.raises(floodwall.ConfigError, match="wait_replicas"):
        floodwall.Limiter("memory://", wait_replicas=1)
