#!/usr/bin/env python3
"""Envoy with floodwall's RLQS beside Envoy with RLS (floodwall's and Limitador's) and Envoy
with no limit, in one run, under wrk -t2 -c64 on loopback; run by bench/rlqs.sh.

One Envoy (2 workers) has a listener per case, all proxying to the same trivial upstream (the
anchors' nginx `return 200`):

  envoy-plain           no rate limit: the proxy's own cost
  envoy-local           Envoy's local_ratelimit token bucket: a limit enforced inside Envoy
  envoy+rlqs-STORE      rate_limit_quota: Envoy enforces floodwall's assignment itself
  envoy+rls-STORE       ratelimit: one call to floodwall's RLS per request
  envoy+limitador-STORE ratelimit: one call to Limitador's RLS per request
for STORE = memory, then redis (one redis-server started here); then two Envoys (1 worker
each, one wrk each, at once) without a limit and with RLQS, each streaming to its own floodwall
on one Redis. Every request is of one tenant (`x-tenant: acme`, the RLQS bucket and the RLS
descriptor), under a limit no case reaches, so every answer is a 200 and what is measured is
the cost of limiting.

Each line: requests/s, p50/p99, non-2xx, the CPU per request of Envoy and of the limiter
(floodwall or Limitador, with Redis), and the limiter's CPU as a share of Envoy's.

  bench/rlqs.py FLOODWALL ENVOY ANCHORS [SECONDS=6]"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

FLOODWALL, ENVOY, ANCHORS = (os.path.abspath(arg) for arg in sys.argv[1:4])
SECONDS = int(sys.argv[4]) if len(sys.argv) > 4 else 6
WORK = tempfile.mkdtemp(prefix="floodwall-rlqs-bench-")
STARTED: list[subprocess.Popen] = []
# One tenant's limit, far above what a 2-core machine proxies: 10 million a second. (RLQS
# shares need limit × burst under 2^52.)
LIMIT = 10_000_000
TENANT = ("x-tenant", "acme")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port} after {within} s (logs in {WORK})")


def start(args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
    process = subprocess.Popen(
        args, stdout=open(os.path.join(WORK, log), "w"), stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def wrk(url: str, threads: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{SECONDS}s", "--latency",
         "-H", f"{TENANT[0]}: {TENANT[1]}", url],
        capture_output=True, text=True, check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": latency.get("50"), "p99": latency.get("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def measure(case: str, urls: list[str], envoys: list[int], limiter: list[int]) -> None:
    """wrk on every URL at once (64 connections in all); one JSON line for the case."""
    before = (cpu_seconds(envoys), cpu_seconds(limiter))
    results: list[dict] = [{} for _ in urls]

    def run(index: int) -> None:
        results[index] = wrk(urls[index], 2 // len(urls), 64 // len(urls))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    envoy_cpu = cpu_seconds(envoys) - before[0]
    limiter_cpu = cpu_seconds(limiter) - before[1]
    requests = sum(r["requests"] for r in results)
    line = {
        "bench": "rlqs", "case": case, "envoys": len(urls),
        "requests_per_s": round(sum(r["requests_per_s"] for r in results), 1),
        "p50": results[0]["p50"], "p99": results[0]["p99"],
        "non_2xx": sum(r["non_2xx"] for r in results),
        "envoy_cpu_us_per_request": round(envoy_cpu * 1e6 / max(requests, 1), 2),
        "limiter_cpu_us_per_request": round(limiter_cpu * 1e6 / max(requests, 1), 2),
        "limiter_cpu_of_envoy": f"{100 * limiter_cpu / max(envoy_cpu, 1e-9):.2f}%",
    }
    print(json.dumps(line), flush=True)


def address(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def h2_cluster(name: str, port: int) -> dict:
    return {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": address(port)}}]}]},
    }


def listener(name: str, port: int, filters: list[dict], rate_limits: list | None = None) -> dict:
    route: dict = {"cluster": "upstream"}
    if rate_limits:
        route["rate_limits"] = rate_limits
    return {"name": name, "address": address(port), "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {"name": name, "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                {"match": {"prefix": "/"}, "route": route}]}]},
            "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }}]}]}


def quota_filter() -> dict:
    tenant = {"name": "tenant", "typed_config": {
        "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
        "header_name": TENANT[0]}}
    settings = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaBucketSettings",
        "bucket_id_builder": {"bucket_id_builder": {"name": {"string_value": "api"}, "tenant": {"custom_value": tenant}}},
        "reporting_interval": "5s",
        "no_assignment_behavior": {"fallback_rate_limit": {"blanket_rule": "ALLOW_ALL"}},
    }
    return {"name": "envoy.filters.http.rate_limit_quota", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rate_limit_quota.v3.RateLimitQuotaFilterConfig",
        "rlqs_server": {"envoy_grpc": {"cluster_name": "rlqs"}},
        "domain": "edge",
        "bucket_matchers": {"matcher_list": {"matchers": [{
            "predicate": {"single_predicate": {"input": tenant, "value_match": {"safe_regex": {"google_re2": {}, "regex": ".+"}}}},
            "on_match": {"action": {"name": "rate_limit_quota", "typed_config": settings}},
        }]}},
    }}


def local_filter() -> dict:
    """Envoy's own local token bucket: what enforcing a limit inside Envoy costs by itself."""
    always = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "local",
        "token_bucket": {"max_tokens": LIMIT, "tokens_per_fill": LIMIT, "fill_interval": "1s"},
        "filter_enabled": {**always, "runtime_key": "local_enabled"},
        "filter_enforced": {**always, "runtime_key": "local_enforced"}}}


def rls_filter(cluster: str) -> dict:
    return {"name": "envoy.filters.http.ratelimit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
        "domain": "edge", "failure_mode_deny": True, "timeout": "1s",
        "rate_limit_service": {"transport_api_version": "V3", "grpc_service": {"envoy_grpc": {"cluster_name": cluster}}}}}


# The tenant as an RLS descriptor: the same key the RLQS bucket is built from.
TENANT_DESCRIPTOR = [{"actions": [{"request_headers": {"header_name": TENANT[0], "descriptor_key": "tenant"}}]}]


def envoy(listeners: dict[str, int], upstream: int, ports: dict[str, int], workers: int, label: str) -> subprocess.Popen:
    """An Envoy with a listener per entry of `listeners` (plain, local, rlqs, rls, limitador)."""
    filters = {
        "plain": ([], None),
        "local": ([local_filter()], None),
        "rlqs": ([quota_filter()], None),
        "rls": ([rls_filter("rls")], TENANT_DESCRIPTOR),
        "limitador": ([rls_filter("limitador")], TENANT_DESCRIPTOR),
    }
    config = {
        "admin": {"address": address(free_port())},
        "static_resources": {
            "listeners": [listener(name, port, *filters[name]) for name, port in listeners.items()],
            "clusters": [
                {"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": address(upstream)}}]}]}},
                *(h2_cluster(name, port) for name, port in ports.items()),
            ],
        },
    }
    path = os.path.join(WORK, f"{label}.json")
    with open(path, "w") as file:
        json.dump(config, file)
    process = start([ENVOY, "-c", path, "--concurrency", str(workers), "-l", "error",
                     "--use-dynamic-base-id", "--disable-hot-restart"], f"{label}.log")
    for port in listeners.values():
        wait_port(port)
    return process


def floodwall(storage: str, rls: int, rlqs: int, label: str) -> subprocess.Popen:
    path = os.path.join(WORK, f"{label}.toml")
    with open(path, "w") as file:
        file.write(f'''[server]
listen = "127.0.0.1:{free_port()}"
[storage]
url = "{storage}"
[[policy]]
name = "per-tenant"
algorithm = "fixed_window"
limit = {LIMIT}
period = "1s"
[rls]
listen = "127.0.0.1:{rls}"
[[rls.rule]]
domain = "edge"
descriptor = ["tenant"]
policies = ["per-tenant"]
[rlqs]
listen = "127.0.0.1:{rlqs}"
[[rlqs.bucket]]
domain = "edge"
bucket = ["name=api", "tenant"]
policies = ["per-tenant"]
''')
    process = start([FLOODWALL, "serve", "--config", path], f"{label}.log", {"RUST_LOG": "warn"})
    wait_port(rls)
    wait_port(rlqs)
    return process


def limitador(storage: list[str], port: int) -> subprocess.Popen:
    limits = os.path.join(WORK, "limitador-limits.yaml")
    with open(limits, "w") as file:
        file.write(f"""- namespace: edge
  max_value: {LIMIT}
  seconds: 1
  conditions: []
  variables:
    - "descriptors[0]['tenant']"
""")
    process = start([os.path.join(ANCHORS, "bin", "limitador-server"), "-b", "127.0.0.1", "-p", str(port),
                     "-B", "127.0.0.1", "-P", str(free_port()), limits, *storage], "limitador.log")
    wait_port(port)
    return process


def warm(url: str) -> None:
    """A few requests, so that the RLQS bucket is assigned before the load."""
    for _ in range(3):
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"{TENANT[0]}: {TENANT[1]}", url], check=False)
        time.sleep(0.2)


def main() -> None:
    nginx = os.path.join(WORK, "nginx")
    os.makedirs(os.path.join(nginx, "tmp"))
    upstream = free_port()
    with open(os.path.join(ANCHORS, "nginx", "nginx.conf.tmpl")) as template:
        text = template.read()
    text = (text.replace("@NGINX_DIR@", nginx).replace("@NGINX_PORT@", str(free_port()))
            .replace("@UPSTREAM_PORT@", str(upstream)))
    with open(os.path.join(nginx, "nginx.conf"), "w") as file:
        file.write(text)
    subprocess.run(["nginx", "-p", nginx, "-c", os.path.join(nginx, "nginx.conf"), "-g", "error_log stderr crit;"], check=True)
    redis_port = free_port()
    try:
        wait_port(upstream)
        for storage in ("memory", "redis"):
            redis: list[int] = []
            if storage == "redis":
                server = start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"], "redis.log")
                wait_port(redis_port)
                redis = [server.pid]
            ports = {name: free_port() for name in ("rls", "rlqs", "limitador")}
            url = "memory://" if storage == "memory" else f"redis://127.0.0.1:{redis_port}/0"
            limiter = floodwall(url, ports["rls"], ports["rlqs"], f"floodwall-{storage}")
            lim = limitador(["memory"] if storage == "memory" else ["redis", f"redis://127.0.0.1:{redis_port}"], ports["limitador"])
            listeners = {name: free_port() for name in ("plain", "local", "rlqs", "rls", "limitador")}
            proxy = envoy(listeners, upstream, ports, 2, f"envoy-{storage}")
            urls = {name: f"http://127.0.0.1:{port}/" for name, port in listeners.items()}
            warm(urls["rlqs"])
            if storage == "memory":
                measure("envoy-plain", [urls["plain"]], [proxy.pid], [])
                measure("envoy-local", [urls["local"]], [proxy.pid], [])
            measure(f"envoy+rlqs-{storage}", [urls["rlqs"]], [proxy.pid], [limiter.pid, *redis])
            measure(f"envoy+rls-{storage}", [urls["rls"]], [proxy.pid], [limiter.pid, *redis])
            measure(f"envoy+limitador-{storage}", [urls["limitador"]], [proxy.pid], [lim.pid, *redis])
            for process in (proxy, lim, limiter):
                stop(process)
            if storage == "redis":
                # Two Envoys, each streaming to its own floodwall on the one Redis. The single
                # Envoy's share still stands in Redis until its TTL: a newcomer is granted only
                # what others do not hold, so it is cleared first.
                subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"], check=True, capture_output=True)
                pairs = []
                for index in range(2):
                    rls_port, rlqs_port = free_port(), free_port()
                    instance = floodwall(url, rls_port, rlqs_port, f"floodwall-{index}")
                    ports = {"rlqs": rlqs_port}
                    listeners = {"plain": free_port(), "rlqs": free_port()}
                    pairs.append((envoy(listeners, upstream, ports, 1, f"envoy-{index}"), instance, listeners))
                envoys = [proxy.pid for proxy, _, _ in pairs]
                for _, _, listeners in pairs:
                    warm(f"http://127.0.0.1:{listeners['rlqs']}/")
                plain = [f"http://127.0.0.1:{listeners['plain']}/" for _, _, listeners in pairs]
                measure("2 envoys, plain", plain, envoys, [])
                rlqs = [f"http://127.0.0.1:{listeners['rlqs']}/" for _, _, listeners in pairs]
                measure("2 envoys, rlqs-redis", rlqs, envoys, [instance.pid for _, instance, _ in pairs] + redis)
                for proxy, instance, _ in pairs:
                    stop(proxy)
                    stop(instance)
                stop(server)
    finally:
        for process in STARTED:
            if process.poll() is None:
                process.kill()
        pid_file = os.path.join(nginx, "nginx.pid")
        if os.path.exists(pid_file):
            with open(pid_file) as file:
                os.kill(int(file.read()), signal.SIGQUIT)


if __name__ == "__main__":
    main()
