"""No Docker engine runs here: the deployment files are checked as text — they
parse, and every command they name exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenwire.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
ROLES = set(_parser()._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_runs_valkey_workers_edges_and_a_proxy() -> None:
    services = compose()["services"]
    assert {"valkey", "worker", "edge1", "edge2", "nginx"} <= set(services)
    for name in ("worker", "edge1", "edge2"):
        service = services[name]
        assert service["command"][0] in ROLES, f"{name} runs an unknown role"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["environment"]["REDIS_URL"].startswith("redis://valkey:")


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


@pytest.mark.parametrize("path", sorted((ROOT / "deploy" / "k8s").glob("*.yaml")))
def test_kubernetes_manifests_parse_and_probe_real_endpoints(path: Path) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in documents)
    text = path.read_text()
    for probe_path in re.findall(r"path: (/\w+)", text):
        assert probe_path in ("/healthz", "/readyz")
    for args in re.findall(r'args: \["(\w+)"\]', text):
        assert args in ROLES


def test_nginx_keeps_sse_unbuffered_and_upgrades_websockets() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert "proxy_buffering off;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert conf.count("{") == conf.count("}")
