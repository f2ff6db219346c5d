"""End to end on a real Valkey Cluster: two ``tokenwire edge`` and two
``tokenwire worker`` processes in cluster mode, auth on (the API key issued
with ``tokenwire keys`` against the cluster), streams spread over every shard,
and httpx-sse clients that drop at random and resume on the other edge: each
ends with exactly the model's output."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from redis.crc import key_slot

from tests.chaos.checker import ClientRecord, check
from tests.support.fake_openai import completion_for
from tests.support.httpx_follower import follow_with_httpx_sse
from tests.support.processes import (
    AUTH_ENV,
    Process,
    create_key,
    free_port,
    tokenwire,
    wait_http,
)
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire import keys

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass
class ClusterTopology:
    edges: list[str]
    key: str
    cluster: ValkeyCluster
    logs: Path


@pytest.fixture(scope="module")
def topology(valkey_cluster: ValkeyCluster, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[ClusterTopology]:
    valkey_cluster.flush()
    logs = tmp_path_factory.mktemp("cluster-e2e-logs")
    llm_port = free_port()
    processes: list[Process] = []
    try:
        processes.append(Process("fake-openai", [
            sys.executable, "-m", "tests.support.fake_openai", "--port", str(llm_port)], {}, logs))
        env = {
            "TOKENWIRE_REDIS_MODE": "cluster",
            "TOKENWIRE_REDIS_URL": valkey_cluster.url,
            "TOKENWIRE_PROVIDER": "openai",
            "OPENAI_BASE_URL": f"http://127.0.0.1:{llm_port}/v1",
            "OPENAI_API_KEY": "test-key",
            "TOKENWIRE_DEFAULT_MODEL": "fake-model",
            "TOKENWIRE_DEFAULT_BUFFER": "word",
            **AUTH_ENV,
        }
        key = create_key(env, "acme")["key"]
        for index in range(2):
            processes.append(tokenwire(f"worker{index}", ["worker"], {
                **env, "TOKENWIRE_CONSUMER_NAME": f"w{index}"}, logs))
        edges = []
        for index in range(2):
            port = free_port()
            edge = tokenwire(f"edge{index}", ["edge", "--port", str(port)], env, logs)
            processes.append(edge)
            edges.append(f"http://127.0.0.1:{port}")
            wait_http(f"{edges[-1]}/readyz", edge)
        yield ClusterTopology(edges, key, valkey_cluster, logs)
    finally:
        for process in reversed(processes):
            process.stop()


async def test_streams_on_every_shard_resume_exactly_on_the_other_edge(
    topology: ClusterTopology
) -> None:
    prompts = [f"#delay=15 cluster stream {index}" for index in range(12)]
    created: list[tuple[str, str, str]] = []  # prompt, stream id, stream token
    async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {topology.key}"}) as session:
        for index, prompt in enumerate(prompts):
            url = f"{topology.edges[index % 2]}/v1/streams"
            async with session.post(url, json={"prompt": prompt}) as response:
                assert response.status == 202, await response.text()
                body = await response.json()
                created.append((prompt, body["id"], body["token"]))
    shards = {topology.cluster.node_of_slot(key_slot(keys.meta(s).encode())).port
              for _, s, _ in created}
    assert len(shards) == 3, "12 streams should land on every master"
    records = [ClientRecord(f"c{index}-{viewer}", stream_id)
               for index, (_, stream_id, _) in enumerate(created) for viewer in range(2)]
    tokens = {stream_id: token for _, stream_id, token in created}
    await asyncio.gather(*(
        follow_with_httpx_sse(topology.edges, record, drop_probability=0.1, first=index,
                              credentials=tokens[record.stream_id], deadline=60)
        for index, record in enumerate(records)))
    texts = {stream_id: "".join(completion_for(prompt)) for prompt, stream_id, _ in created}
    for record in records:
        verdict = check(record, texts[record.stream_id])
        assert verdict.violations == [], verdict.violations
        assert verdict.terminal is not None and verdict.terminal.type == "done"
        assert verdict.resets == 0
    assert sum(len(r.connections) for r in records) > len(records), "nobody dropped"
