"""The Kubernetes manifests under deploy/kubernetes, which cannot be applied here: validated
against a current Kubernetes's schemas, linted by checkov, their TOML checked by floodwall
itself, their Istio example's Envoy configuration loaded by a real Envoy, and their pieces
held to one another (ports, the drain, what kustomize applies).

Needs kubernetes-validate and checkov (deploy/requirements-test.txt, in the virtual
environment scripts/test makes for them), FLOODWALL_BIN, and an `envoy` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37.0"
# Custom resources, whose schemas live in their operators' CRDs, not in Kubernetes's.
CUSTOM_KINDS = {"Kustomization", "ServiceMonitor", "EnvoyFilter"}
# The most the service takes to drain after SIGTERM (DRAIN_DEADLINE in the server crate).
DRAIN_SECONDS = 4


def tool(name: str) -> str:
    found = os.path.join(os.path.dirname(sys.executable), name)
    return found if os.path.exists(found) else (shutil.which(name) or pytest.fail(f"no {name}"))


def manifest_files() -> List[Path]:
    return sorted(MANIFESTS.rglob("*.yaml"))


def documents(path: Path) -> List[Dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def resource(kind: str) -> Dict[str, Any]:
    for path in manifest_files():
        for document in documents(path):
            if document.get("kind") == kind:
                return document
    raise AssertionError(f"no {kind} under {MANIFESTS}")


def floodwall_toml() -> Dict[str, Any]:
    return tomllib.loads(resource("ConfigMap")["data"]["floodwall.toml"])


def test_every_manifest_validates_against_kubernetes():
    files = [str(path) for path in manifest_files()]
    done = subprocess.run([tool("kubernetes-validate"), "--strict", "--kubernetes-version",
                           KUBERNETES_VERSION, *files], capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    validated = [line for line in output.splitlines() if " passed for resource " in line]
    unvalidated = [line for line in output.splitlines() if line.startswith("WARN")]
    for line in unvalidated:
        assert "Couldn't find schema for kind" in line, line
        assert line.split("for kind ")[1].split()[0] in CUSTOM_KINDS, line
    builtin = sum(1 for path in manifest_files() for document in documents(path)
                  if document["kind"] not in CUSTOM_KINDS)
    assert len(validated) == builtin, output


def test_checkov_finds_nothing_unexplained():
    done = subprocess.run([tool("checkov"), "--directory", str(MANIFESTS), "--framework",
                           "kubernetes", "--output", "json", "--skip-download",
                           "--compact"], capture_output=True, text=True,
                          env=dict(os.environ, BC_SKIP_MAPPING="TRUE"))
    report = json.loads(done.stdout)
    results = report["results"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in results["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 50, "checkov ran its Kubernetes checks"
    for skipped in results["skipped_checks"]:
        reason = (skipped.get("check_result") or {}).get("suppress_comment", "")
        assert len(reason.strip()) > 10, f"{skipped['check_id']} is skipped without a reason"


def test_the_configmaps_toml_passes_config_check():
    binary = os.environ.get("FLOODWALL_BIN") or pytest.fail("FLOODWALL_BIN is not set")
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "floodwall.toml"
        config.write_text(resource("ConfigMap")["data"]["floodwall.toml"])
        environment = dict(os.environ, FLOODWALL_ADMIN_TOKEN="a" * 32,
                           FLOODWALL_CHECK_TOKEN="c" * 32)
        done = subprocess.run([binary, "config", "check", str(config)], capture_output=True,
                              text=True, env=environment)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_deployment_serves_the_configs_listeners_on_the_services_ports():
    config = floodwall_toml()
    listeners = {
        "http": config["server"]["listen"],
        "grpc-rls": config["rls"]["listen"],
        "grpc-rlqs": config["rlqs"]["listen"],
        "admin": config["admin"]["listen"],
    }
    (container,) = resource("Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for name, listen in listeners.items():
        host, port = listen.rsplit(":", 1)
        assert host == "0.0.0.0", f"{name} listens on {listen}: unreachable from the Service"
        assert ports[name] == int(port), (name, listen, ports)
    service_ports = {port["name"]: port["targetPort"] for port in resource("Service")["spec"]["ports"]}
    assert service_ports == {name: name for name in listeners}
    # The admin port is the one the NetworkPolicy keeps to the monitoring namespace.
    rules = resource("NetworkPolicy")["spec"]["ingress"]
    admin_rules = [rule for rule in rules if any(p["port"] == ports["admin"] for p in rule["ports"])]
    assert len(admin_rules) == 1 and admin_rules[0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert resource("ServiceMonitor")["spec"]["endpoints"][0]["port"] == "admin"


def test_the_grace_period_covers_the_pre_stop_wait_and_the_drain():
    pod = resource("Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + DRAIN_SECONDS
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 65532
    assert security["capabilities"]["drop"] == ["ALL"]
    # Liveness never asks the store; readiness does (and stays up under on_error = "allow").
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert floodwall_toml()["storage"]["on_error"] == "allow"


def test_kustomize_applies_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_envoy_loads_the_istio_examples_rate_limit_configuration():
    patches = resource("EnvoyFilter")["spec"]["configPatches"]
    (rate_limit_filter,) = [p["patch"]["value"] for p in patches if p["applyTo"] == "HTTP_FILTER"]
    (virtual_host_patch,) = [p["patch"]["value"] for p in patches if p["applyTo"] == "VIRTUAL_HOST"]
    cluster = rate_limit_filter["typed_config"]["rate_limit_service"]["grpc_service"][
        "envoy_grpc"]["cluster_name"]
    # What Istio's gateway would hold once both patches apply, with the cluster Istio makes for
    # the Service's grpc-rls port.
    bootstrap = {
        "static_resources": {
            "listeners": [{
                "name": "gateway",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                 "http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "gateway",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"},
                                        "route": {"cluster": "upstream"}}],
                            **virtual_host_patch,
                        }]},
                        "http_filters": [rate_limit_filter, {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions."
                                                      "filters.http.router.v3.Router"},
                        }],
                    },
                }]}],
            }],
            "clusters": [
                {"name": cluster, "type": "STRICT_DNS", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {
                     "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3."
                                  "HttpProtocolOptions",
                         "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {
                         "address": "floodwall.floodwall.svc.cluster.local",
                         "port_value": 8081}}}}]}]}},
                {"name": "upstream", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                     {"endpoint": {"address": {"socket_address": {
                         "address": "127.0.0.1", "port_value": 9}}}}]}]}},
            ],
        },
    }
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "envoy.yaml"
        path.write_text(yaml.safe_dump(bootstrap))
        done = subprocess.run([tool("envoy"), "--mode", "validate", "-c", str(path),
                               "--log-level", "error"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "configuration" in done.stdout and "OK" in done.stdout, done.stdout
