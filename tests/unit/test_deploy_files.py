"""No Docker engine runs here: the deployment files are checked as text — they
parse, and every command, port, setting and probe path they name exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from tokenwire import keys
from tokenwire.cli import _parser
from tokenwire.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ROLES = set(_parser()._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


#: Environment variables Tokenwire reads: every setting, by its TOKENWIRE_ name
#: and its aliases (REDIS_URL, OPENAI_API_KEY, ...).
SETTING_NAMES = {f"TOKENWIRE_{name.upper()}" for name in Settings.model_fields} | {
    alias for field in Settings.model_fields.values()
    if isinstance(field.validation_alias, AliasChoices)
    for alias in field.validation_alias.choices if isinstance(alias, str)}


def default_of(value: str) -> str:
    """``${NAME:-default}`` -> ``default`` (what compose uses when NAME is unset)."""
    found = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return found.group(1) if found else value


def test_compose_runs_valkey_workers_edges_and_a_proxy() -> None:
    services = compose()["services"]
    assert {"valkey", "worker", "edge1", "edge2", "nginx"} <= set(services)
    for name in ("worker", "edge1", "edge2"):
        service = services[name]
        assert service["command"][0] in ROLES, f"{name} runs an unknown role"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        environment = service["environment"]
        assert default_of(environment["REDIS_URL"]).startswith("redis://valkey:")
        assert default_of(environment["TOKENWIRE_REDIS_MODE"]) == "standalone"
        assert set(environment) <= SETTING_NAMES, set(environment) - SETTING_NAMES


def test_compose_cluster_profile_forms_three_masters_with_a_replica_each() -> None:
    services = compose()["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("valkey-node-")}
    assert len(nodes) == 6
    for name, node in nodes.items():
        assert node["profiles"] == ["cluster"] and node["hostname"] == name
        command = " ".join(node["command"])
        assert "--cluster-enabled yes" in command
        assert "--cluster-require-full-coverage no" in command
    init = services["valkey-cluster-init"]
    assert init["profiles"] == ["cluster"]
    assert init["command"][:3] == ["valkey-cli", "--cluster", "create"]
    assert [a.split(":")[0] for a in init["command"] if a.endswith(":6379")] == sorted(nodes)
    assert init["command"][-3:] == ["--cluster-replicas", "1", "--cluster-yes"]
    # The services reach the cluster through the one URL the comment names.
    assert "REDIS_URL=redis://valkey-node-1:6379" in (ROOT / "docker-compose.yml").read_text()


def test_files_the_compose_file_mounts_exist() -> None:
    for service in compose()["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source


def test_dockerfile_installs_the_package_and_its_entry_point() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    for copied in re.findall(r"^COPY (?!--)(\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert 'ENTRYPOINT ["tokenwire"]' in dockerfile and "tokenwire" in scripts
    assert re.search(r'^CMD \["(\w+)"\]', dockerfile, flags=re.M).group(1) in ROLES  # type: ignore[union-attr]


def manifests(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / name).read_text()) if d]


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "k8s").glob("*.yaml")))
def test_kubernetes_manifests_parse_and_probe_real_endpoints(path: Path) -> None:
    documents = manifests(path.name)
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in documents)
    text = path.read_text()
    for probe_path in re.findall(r"path: (/\w+)", text):
        assert probe_path in ("/healthz", "/readyz")
    for args in re.findall(r'args: \["(\w+)"\]', text):
        assert args in ROLES
    for document in documents:  # what ConfigMaps and Secrets hand to envFrom
        if document["kind"] in ("ConfigMap", "Secret"):
            names = set(document.get("data", {})) | set(document.get("stringData", {}))
            assert names <= SETTING_NAMES, names - SETTING_NAMES
    worker_ports = re.findall(r"TOKENWIRE_WORKER_METRICS_PORT, value: \"(\d+)\"", text)
    for port in re.findall(r"containerPort: (\d+)", text):
        # TOKENWIRE_PORT in the image; Valkey; the worker's probes where it listens
        assert port in ("8080", "6379", "16379", *worker_ports)


def test_the_edge_listens_where_the_manifests_send_traffic() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "TOKENWIRE_PORT=8080" in dockerfile and "EXPOSE 8080" in dockerfile


def test_the_cluster_deployment_runs_in_cluster_mode() -> None:
    [secret] = [d for d in manifests("cluster.yaml") if d["kind"] == "Secret"]
    settings = Settings(_env_file=None, **{  # the values parse as the settings they name
        name.removeprefix("TOKENWIRE_").lower(): value
        for name, value in secret["stringData"].items()})
    assert settings.redis_mode == "cluster"
    [statefulset] = [d for d in manifests("cluster.yaml") if d["kind"] == "StatefulSet"]
    assert statefulset["spec"]["replicas"] == 6
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--cluster-enabled") + 1] == "yes"
    assert args[args.index("--cluster-require-full-coverage") + 1] == "no"
    # Tokenwire's Deployments read the Secret this file defines.
    deployments = [d for d in manifests("tokenwire.yaml") if d["kind"] == "Deployment"]
    for deployment in deployments:
        sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources


def test_keda_scales_the_workers_on_every_job_partition() -> None:
    """One redis-cluster-streams trigger per partition, on the stream names the
    code uses (they carry a hash tag found for each partition count)."""
    [secret] = [d for d in manifests("cluster.yaml") if d["kind"] == "Secret"]
    partitions = int(secret["stringData"]["TOKENWIRE_JOB_PARTITIONS"])
    [scaled] = [d for d in manifests("cluster.yaml") if d["kind"] == "ScaledObject"]
    workers = [d["metadata"]["name"] for d in manifests("tokenwire.yaml")
               if d["kind"] == "Deployment" and d["spec"]["template"]["spec"]["containers"][0]
               ["args"] == ["worker"]]
    assert scaled["spec"]["scaleTargetRef"]["name"] in workers
    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"redis-cluster-streams"}
    assert [t["metadata"]["stream"] for t in triggers] == [
        keys.job_stream(p, partitions) for p in range(partitions)]
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {keys.WORKERS_GROUP}
    statefulset = next(d for d in manifests("cluster.yaml") if d["kind"] == "StatefulSet")
    for trigger in triggers:
        for address in trigger["metadata"]["addresses"].split(","):
            host, port = address.split(":")
            assert host.startswith(statefulset["metadata"]["name"] + "-") and port == "6379"
        assert int(trigger["metadata"]["pendingEntriesCount"]) > 0


def test_nginx_keeps_sse_unbuffered_and_upgrades_websockets() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "proxy_buffering off;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert conf.count("{") == conf.count("}")
