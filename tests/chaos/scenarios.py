"""The fault matrix of issue #4, one scenario per fault. Each scenario runs on
its own fresh cluster (``Scenario.settings`` tune it), injects its faults,
and lets the checker judge every client's events.

``fast`` scenarios also run in ``make test``; ``make chaos`` runs them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import time
from typing import Any

from redis.asyncio import Redis

from tests.chaos.checker import ClientRecord
from tests.chaos.clients import follow
from tests.chaos.cluster_scenarios import CLUSTER_SCENARIOS
from tests.chaos.run import Run
from tests.chaos.scenario import Scenario
from tests.support.fake_openai import completion_for
from tests.support.jobs import dead_letters, queued_jobs
from tests.support.waiting import eventually
from tokenwire.events import dumps
from tokenwire.jobqueue import JobQueue, partition_for
from tokenwire.settings import Settings
from tokenwire.store import Attempt, PendingEvent, StreamStore


async def restart_worker_later(run: Run, index: int, after: float = 0.5) -> None:
    await asyncio.sleep(after)
    run.cluster.start_worker(index)


# --- workers -----------------------------------------------------------------------


async def worker_dies_before_text(run: Run) -> None:
    prompt = run.prompt("#first=2500")
    stream_id = await run.create(prompt)
    run.watch(stream_id, 3)
    owner = await run.cluster.owner(stream_id, min_seq=1)
    run.cluster.kill_worker(owner)
    run.fault(f"SIGKILL worker{owner} before its first token")
    await restart_worker_later(run, owner)
    await run.finish(max_resets=0)
    meta = await run.cluster.meta(stream_id)
    run.require(meta.get("attempt") == "2", f"no takeover happened: attempt {meta.get('attempt')}")


async def worker_dies_mid_generation(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=40")) for _ in range(3)]
    for stream_id in streams:
        run.watch(stream_id, 2)
    owner = await run.cluster.owner(streams[0], min_seq=6)
    run.cluster.kill_worker(owner)
    run.fault(f"SIGKILL worker{owner} mid-generation")
    await restart_worker_later(run, owner)
    verdicts = await run.finish(max_resets=1)
    recovery = run.cluster.env.get("TOKENWIRE_RECOVERY_MODE", "restart")
    resets = sum(v.resets for v in verdicts)
    if recovery == "continue":
        run.require(resets == 0, f"continue mode: {resets} resets")
    else:
        run.require(resets >= 2, "the crash was invisible: nobody got a reset")


async def paused_worker_is_fenced(run: Run) -> None:
    prompt = run.prompt("#delay=100")
    stream_id = await run.create(prompt)
    run.watch(stream_id, 2)
    owner = await run.cluster.owner(stream_id, min_seq=4)
    run.cluster.signal_worker(owner, signal.SIGSTOP)
    run.fault(f"SIGSTOP worker{owner} for 3 s (claim timeout 1.5 s)")
    await asyncio.sleep(3)
    run.cluster.signal_worker(owner, signal.SIGCONT)
    await run.finish(max_resets=1)
    await asyncio.sleep(0.5)
    logs = run.cluster.logs(f"worker{owner}")
    run.require("belongs to a newer attempt" in logs, "the paused worker was not fenced")
    stats = (await run.cluster.llm_stats())[prompt]
    run.require(stats["requests"] == 2 and stats["closed_early"] == 1,
                f"the fenced worker did not close its upstream call: {stats}")


async def lost_replies_are_retried(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=20")) for _ in range(4)]
    for stream_id in streams:
        run.watch(stream_id, 1, drop=0.0)
    killed = 0
    until = time.monotonic() + 2.5
    while time.monotonic() < until:
        # Killing a connection while a write is in flight loses its reply, not the write.
        for client in await run.cluster.redis.client_list():
            if client.get("name") == "tw-worker" and "evalsha" in client.get("cmd", ""):
                await run.cluster.redis.client_kill_filter(_id=client["id"])
                killed += 1
        await asyncio.sleep(0.01)
    run.fault(f"{killed} worker connections killed mid-write")
    run.require(killed > 0, "no write was in flight to kill")
    await run.finish(max_resets=0)


async def terminal_written_before_ack(run: Run) -> None:
    for index in range(len(run.cluster.workers)):
        run.cluster.kill_worker(index)
    prompt = run.prompt()
    stream_id = await run.create(prompt)
    # A "ghost" worker takes the job, writes all of it, and dies before XACK.
    settings = Settings(redis_url=run.cluster.valkey.url, _env_file=None)
    redis = Redis.from_url(run.cluster.valkey.url, decode_responses=True)
    try:
        queue = JobQueue(redis, "ghost", 1500, settings.job_partitions)
        await queue.ensure_groups()
        [delivery] = await queue.read_new(partition_for(stream_id, settings.job_partitions), 1)
        assert delivery.job is not None
        store = StreamStore(redis, settings)
        began = await store.begin(delivery.job, delivery.entry_id, "ghost")
        assert isinstance(began, Attempt)
        text = "".join(completion_for(prompt))
        done = dumps({"finish_reason": "stop", "tokens": 60, "duration_ms": 1,
                      "tokens_per_second": 1.0,
                      "sha256": hashlib.sha256(text.encode()).hexdigest()})
        await store.append(began, 2, [PendingEvent("token", dumps({"content": text}), text),
                                      PendingEvent("done", done)], final_status="done")
    finally:
        await redis.aclose()
    run.fault("worker died after the terminal event, before XACK")
    for index in range(len(run.cluster.workers)):
        run.cluster.start_worker(index)
    run.watch(stream_id, 2)
    await run.finish(max_resets=0)

    async def acked() -> bool:  # reclaimed after the claim timeout, found done, acked
        return await queued_jobs(run.cluster.redis) == 0

    try:
        await eventually(acked, 15)  # the restarted workers may take seconds to start
    except TimeoutError:
        run.require(False, "the job was not acked")
    meta = await run.cluster.meta(stream_id)
    run.require(meta["attempt"] == "1", f"generated again: attempt {meta['attempt']}")
    run.require(prompt not in await run.cluster.llm_stats(), "the model was called again")


async def poison_jobs_are_dead_lettered(run: Run) -> None:
    failing = await run.create(run.prompt("#status=500"))
    run.watch(failing, 2)
    run.fault("upstream always answers 500")
    await run.finish(expect="error", code="upstream_500")
    crashing = await run.create(run.prompt("#first=60000"))
    run.watch(crashing, 2, deadline=80)
    for attempt in range(1, 4):  # every attempt at this job kills its worker
        await run.wait_for_meta(crashing, "attempt", equal=str(attempt))
        await run.wait_for_meta(crashing, "owner", differ="")
        owner = int((await run.cluster.meta(crashing))["owner"][1:])
        run.cluster.kill_worker(owner)
        run.fault(f"job crashed worker{owner} (attempt {attempt})")
        await restart_worker_later(run, owner, 0.2)
    await run.finish(expect="error", code="attempts_exhausted")
    # begin.lua writes the terminal error of an exhausted job; the worker's dead
    # letter follows in a later round trip.
    reasons: dict[str, str] = {}

    async def both_dead_lettered() -> bool:
        nonlocal reasons
        dead = await dead_letters(run.cluster.redis)
        reasons = {fields["stream_id"]: fields["reason"] for fields in dead}
        return {failing, crashing} <= reasons.keys()

    with contextlib.suppress(TimeoutError):  # the requirement below says what is missing
        await eventually(both_dead_lettered, 10)
    run.require(reasons == {failing: "upstream_500", crashing: "attempts_exhausted"},
                f"dead letters {reasons}")


async def sigterm_with_every_slot_busy(run: Run) -> None:
    """A worker whose every slot is busy still drains on SIGTERM: intake stops,
    its generations get the grace period (1 s), the rest are released."""
    streams = [await run.create(run.prompt("#delay=150")) for _ in range(4)]  # ~9 s each
    for stream_id in streams:
        run.watch(stream_id, 1)
    owners = {await run.cluster.owner(stream_id, min_seq=2) for stream_id in streams}
    run.require(owners == {0, 1}, f"slots not all busy: owners {owners}")
    terminated = time.monotonic()
    run.cluster.signal_worker(0, signal.SIGTERM)
    run.fault("SIGTERM worker0 with both of its slots busy (grace 1 s)")
    worker = run.cluster.workers[0]
    assert worker is not None
    code = await asyncio.to_thread(worker.popen.wait, 30)
    took = time.monotonic() - terminated
    run.require(code == 0 and took < 5, f"worker0 exited {code} after {took:.1f} s")
    run.cluster.start_worker(0)  # the deploy's new pod takes the released jobs
    await run.finish(max_resets=1)


async def poisoned_live_messages(run: Run) -> None:
    """Garbage on a stream's live channel: logged and skipped by every edge's
    hub; clients see no difference (the stream in Redis is the truth)."""
    streams = [await run.create(run.prompt("#delay=40")) for _ in range(2)]
    for stream_id in streams:
        run.watch(stream_id, 2, drop=0.0)
        run.watch_with_httpx_sse(stream_id, 1)
    await run.cluster.owner(streams[0], min_seq=3)
    for stream_id in streams:
        for poison in ("garbage", "x.y token {}", "1.2"):
            await run.cluster.redis.spublish(f"tw:{{{stream_id}}}:live", poison)
    run.fault("malformed messages published on live channels")
    await run.finish(max_resets=0)
    run.require("malformed live message skipped" in run.cluster.logs("edge"),
                "no edge saw the poison")


async def sigterm_releases_jobs(run: Run) -> None:
    long = await run.create(run.prompt("#delay=60"))
    run.watch(long, 2)
    owner = await run.cluster.owner(long, min_seq=5)
    short = await run.create(run.prompt("#delay=3"))  # ~0.2 s: finishes within the grace
    run.watch(short, 1)
    await asyncio.sleep(0.05)
    terminated = time.monotonic()
    run.cluster.signal_worker(owner, signal.SIGTERM)
    run.fault(f"SIGTERM worker{owner} (grace 1 s, claim timeout 10 s)")
    await run.wait_for_meta(long, "owner", differ=f"w{owner}", seconds=30)
    taken_over = time.monotonic() - terminated
    run.require(taken_over < 8, f"released job taken over after {taken_over:.1f} s")
    await run.finish(max_resets=1)
    worker = run.cluster.workers[owner]
    assert worker is not None
    run.require(worker.popen.wait(10) == 0, "the worker did not exit cleanly")


# --- Redis -------------------------------------------------------------------------


async def redis_restarts_empty(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=50")) for _ in range(3)]
    for stream_id in streams:
        run.watch(stream_id, 2)
    await run.cluster.owner(streams[0], min_seq=6)
    run.cluster.valkey.kill()
    run.cluster.valkey.start(empty=True)
    run.fault("kill -9 Valkey, restart it empty")
    await run.cluster.valkey.wait_ready()
    await run.finish(max_resets=1)
    after = await run.create(run.prompt())  # the consumer group was recreated
    run.watch(after, 1)
    await run.finish(max_resets=0)


async def redis_loses_its_last_writes(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=50")) for _ in range(3)]
    for stream_id in streams:
        run.watch(stream_id, 2, drop=0.0)
    await run.cluster.owner(streams[0], min_seq=25)
    run.cluster.valkey.kill()
    lost = run.cluster.valkey.drop_aof_tail(0.05)
    run.cluster.valkey.start()
    run.fault(f"kill -9 Valkey, {lost} bytes of AOF tail lost")
    await run.cluster.valkey.wait_ready()
    verdicts = await run.finish(max_resets=1)
    run.require(any(v.resets for v in verdicts), "no client saw the loss (no reset)")


async def redis_away(run: Run, seconds: float, *, back_empty: bool = False) -> None:
    """Valkey frozen (SIGSTOP: unreachable, then back with its data), or killed
    and restarted empty. Half the clients are httpx-sse, which sees only what
    the edge sends: held, then 200 + a reconnect notice while Redis is away
    (never a status to give up on). Back empty, every job a worker held is
    rebuilt from it: one reset, the whole answer."""
    streams = [await run.create(run.prompt("#delay=40")) for _ in range(3)]
    for stream_id in streams:
        run.watch(stream_id, 1, deadline=seconds + 60)
        run.watch_with_httpx_sse(stream_id, 1, deadline=seconds + 60)
    await run.cluster.owner(streams[0], min_seq=5)
    if back_empty:
        run.cluster.valkey.kill()
        run.fault(f"kill -9 Valkey, down {seconds:.0f} s, restarted empty")
    else:
        run.cluster.valkey.signal(signal.SIGSTOP)
        run.fault(f"Valkey frozen (SIGSTOP) for {seconds:.0f} s")
    await asyncio.sleep(seconds)
    if back_empty:
        run.cluster.valkey.start(empty=True)
        await run.cluster.valkey.wait_ready()
    else:
        run.cluster.valkey.signal(signal.SIGCONT)
    verdicts = await run.finish(max_resets=1)
    if back_empty:
        run.require(all(v.resets == 1 for v in verdicts), "a rebuilt stream came without reset")
    after = await run.create(run.prompt())  # back empty: the consumer group was recreated
    run.watch_with_httpx_sse(after, 1)
    await run.finish(max_resets=0)


async def redis_unreachable_5s(run: Run) -> None:
    await redis_away(run, 5)


async def redis_unreachable_60s(run: Run) -> None:
    await redis_away(run, 60)


async def redis_down_past_the_hold(run: Run) -> None:
    await redis_away(run, 4, back_empty=True)


async def redis_down_40s(run: Run) -> None:
    await redis_away(run, 40, back_empty=True)


async def redis_out_of_memory(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=40")) for _ in range(2)]
    for stream_id in streams:
        run.watch(stream_id, 2)
    await run.cluster.owner(streams[0], min_seq=5)
    redis = run.cluster.redis
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", str(used // 2))
    run.fault("maxmemory set below used memory")
    await run.finish(expect="error", code="capacity")
    url = f"{run.cluster.edge_urls[1]}/v1/streams"
    async with run.session.post(url, json={"prompt": "refused"}) as response:
        body = await response.json()
        run.require(response.status == 503 and body["error"]["code"] == "capacity"
                    and "Retry-After" in response.headers, f"POST in OOM: {response.status}")
    await redis.config_set("maxmemory", "0")
    after = await run.create(run.prompt())
    run.watch(after, 1)
    await run.finish()


# --- edges and cursors ---------------------------------------------------------------


async def edge_killed_under_load(run: Run) -> None:
    streams = [await run.create(run.prompt("#delay=40"), edge=i % 2) for i in range(10)]
    for stream_id in streams:
        run.watch(stream_id, 3, drop=0.02)
    await asyncio.sleep(1.0)
    run.cluster.kill_edge(0)
    run.fault("SIGKILL edge0 under load")
    await asyncio.sleep(1.0)
    run.cluster.start_edge(0)
    await run.finish(max_resets=0)


async def cursors_that_cannot_continue(run: Run) -> None:
    prompt = run.prompt("#delay=5")
    stream_id = await run.create(prompt, buffer="none")
    run.watch(stream_id, 1, drop=0.0)
    [first] = await run.finish()
    epoch = first.terminal.id.split(".")[0] if first.terminal and first.terminal.id else "x"
    crafted = {"other epoch": "a0a0a0a0a0a.3", "ahead": f"{epoch}.9999",
               "trimmed": f"{epoch}.2"}  # events_maxlen 10: seq 2 is long gone
    for label, cursor in crafted.items():
        record = ClientRecord(label.replace(" ", "-"), stream_id, initial_cursor=cursor)
        await follow(run.session, run.cluster.edge_urls, record)
        run.outcome.clients += 1
        run.outcome.events += len(record.events)
        types = [event.type for event in record.events]
        run.require(types[:1] == ["reset"], f"{label}: {types[:3]}, expected reset first")
        run.require(bool(record.terminal), f"{label}: no terminal event")
        text = "".join(e.data["content"] for e in record.events if e.type in ("snapshot", "token"))
        run.require(text == "".join(completion_for(prompt)), f"{label}: text differs")
    run.fault("resume from another epoch, from ahead, from trimmed history")
    await asyncio.sleep(1.5)  # events_ttl 1 s: the finished stream's events expire
    url = f"{run.cluster.edge_urls[1]}/v1/streams/{stream_id}/events"
    async with run.session.get(url, headers={"Last-Event-ID": f"{epoch}.3"}) as response:
        run.require(response.status == 204, f"expired history: HTTP {response.status}")
    run.fault("resume after the events expired")


# --- the upstream LLM ----------------------------------------------------------------


async def upstream_truncates(run: Run) -> None:
    stream_id = await run.create(run.prompt("#truncate #delay=5"))
    run.watch(stream_id, 2)
    run.fault("every attempt ends without a finish reason")
    await run.finish(expect="error", code="upstream_incomplete", max_resets=2)


async def upstream_goes_silent(run: Run) -> None:
    stalled = run.prompt("#stall=5")
    dripping = run.prompt("#delay=200")
    for prompt in (stalled, dripping):
        run.watch(await run.create(prompt), 2)
    run.fault("silent after 5 tokens (max gap 1 s); a drip past the 3 s deadline")
    await run.finish(expect="error", code="upstream_timeout", max_resets=0)
    await asyncio.sleep(0.5)
    stats = await run.cluster.llm_stats()
    for prompt in (stalled, dripping):
        run.require(stats[prompt]["closed_early"] == 1, f"upstream not closed: {stats[prompt]}")


async def upstream_refuses_then_recovers(run: Run) -> None:
    limited = run.prompt("#fail=2:429 #retry_after=1")
    erroring = run.prompt("#fail=3:503")
    cut = run.prompt("#cut=1:20 #delay=20")
    started = time.monotonic()
    streams = {prompt: await run.create(prompt) for prompt in (limited, erroring, cut)}
    run.watch(streams[limited], 2)
    run.watch(streams[erroring], 2)
    run.watch(streams[cut], 2, drop=0.0)
    run.fault("429 twice with Retry-After: 1; 503 three times; a connection cut after 20 chunks")
    verdicts = await run.finish(max_resets=1)
    elapsed = time.monotonic() - started
    stats = await run.cluster.llm_stats()
    run.require(stats[limited]["requests"] == 3 and stats[erroring]["requests"] == 4
                and stats[cut]["requests"] == 2, f"retries: {stats}")
    run.require(all(v.resets == 1 for v in verdicts[4:]),  # they saw text before the cut
                "a failure after the first token did not start a new attempt with reset")
    run.require(elapsed >= 2.0, f"Retry-After not honoured ({elapsed:.1f} s)")
    run.require(all(v.resets == 0 for v in verdicts[:4]),  # the 429 and 503 streams
                "a failure before the first token was visible")


# --- cancellation and disconnects ------------------------------------------------------


async def cancel_anywhere(run: Run) -> None:
    for index in range(len(run.cluster.workers)):
        run.cluster.signal_worker(index, signal.SIGSTOP)
    queued_prompt = run.prompt()
    queued = await run.create(queued_prompt)
    await cancel(run, queued, edge=1)
    for index in range(len(run.cluster.workers)):
        run.cluster.signal_worker(index, signal.SIGCONT)
    rest_prompt, ws_prompt = run.prompt("#delay=50"), run.prompt("#delay=50")
    rest, ws = await run.create(rest_prompt), await run.create(ws_prompt)
    for stream_id in (queued, rest, ws):
        run.watch(stream_id, 2)
    await run.cluster.owner(rest, min_seq=4)
    await cancel(run, rest, edge=1)
    await run.cluster.owner(ws, min_seq=4)
    url = run.cluster.edge_urls[0].replace("http", "ws") + f"/v1/streams/{ws}/ws"
    async with run.session.ws_connect(url) as socket:
        await socket.send_str(json.dumps({"type": "cancel"}))
        async for _ in socket:
            pass
    run.fault("cancel while queued (REST), running (REST, other edge), running (WebSocket)")
    verdicts = await run.finish(code="cancelled", max_resets=0)
    for verdict in verdicts:
        if verdict.terminal is not None:
            run.require(verdict.terminal.data.get("cancel_latency_ms", 0) < 1000,
                        f"cancel took {verdict.terminal.data}")
    again = await cancel(run, rest, edge=0)
    run.require(again == "cancelled", f"a second cancel answered {again}")
    await asyncio.sleep(1.0)
    stats = await run.cluster.llm_stats()
    run.require(queued_prompt not in stats, "a job cancelled while queued was generated")
    for prompt in (rest_prompt, ws_prompt):
        run.require(stats[prompt]["closed_early"] == 1, f"upstream not closed: {stats[prompt]}")


async def cancel(run: Run, stream_id: str, edge: int) -> str:
    url = f"{run.cluster.edge_urls[edge]}/v1/streams/{stream_id}/cancel"
    async with run.session.post(url) as response:
        status: str = (await response.json())["status"]
        return status


async def abandoned_streams_stop(run: Run) -> None:
    policy: dict[str, Any] = {"on_disconnect": "cancel_after=1"}
    unwatched = await run.create(run.prompt("#delay=100"), **policy)
    watched = await run.create(run.prompt("#delay=50"), **policy)
    handed_over = await run.create(run.prompt("#delay=50"), **policy)
    default = await run.create(run.prompt("#delay=20"))
    run.watch(watched, 1, drop=0.0)
    # One viewer on edge0 leaves after 1 s; one on edge1 stays: still watched.
    leaver = ClientRecord("leaver", handed_over)
    leaving = asyncio.create_task(follow(run.session, run.cluster.edge_urls, leaver,
                                         deadline=1.0))
    run.watch(handed_over, 1, drop=0.0)
    run.fault("no viewer; viewers on both edges, one leaves; on_disconnect continue")
    await leaving
    await run.finish(code="stop")  # watched (on some edge) all along: not cancelled
    await run.wait_for_meta(unwatched, "status", equal="cancelled")
    await run.wait_for_meta(default, "status", equal="done")
    for stream_id in (unwatched, default):
        run.watch(stream_id, 1, drop=0.0)  # late viewers still get a definite end
    verdicts = await run.finish(expect="done")
    reasons = [v.terminal.data.get("finish_reason") for v in verdicts if v.terminal]
    run.require(reasons == ["cancelled", "stop"], f"finish reasons {reasons}")


SCENARIOS = (
    Scenario("worker-dies-before-text", "1 worker dies before writing", worker_dies_before_text),
    Scenario("worker-dies-mid-generation", "2 worker dies mid-generation (restart)",
             worker_dies_mid_generation, fast=True),
    Scenario("worker-dies-continue-mode", "2 worker dies mid-generation (continue)",
             worker_dies_mid_generation, fast=True,
             settings={"TOKENWIRE_RECOVERY_MODE": "continue"}),
    Scenario("paused-worker-fenced", "3 paused worker wakes up fenced", paused_worker_is_fenced),
    Scenario("lost-replies", "4 write replies lost, retried", lost_replies_are_retried,
             fast=True, settings={"TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "5000"}),
    Scenario("terminal-before-ack", "5 dies after the terminal event, before XACK",
             terminal_written_before_ack),
    Scenario("poison-jobs", "6 poison jobs dead-lettered", poison_jobs_are_dead_lettered),
    Scenario("sigterm-deploy", "7 SIGTERM during a deploy", sigterm_releases_jobs,
             settings={"TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "10000"}),
    Scenario("redis-restarts-empty", "8 Redis restarts empty", redis_restarts_empty, fast=True),
    Scenario("redis-loses-last-writes", "9 Redis loses its AOF tail",
             redis_loses_its_last_writes),
    Scenario("redis-unreachable-5s", "10 Redis unreachable 5 s", redis_unreachable_5s),
    Scenario("redis-unreachable-60s", "10 Redis unreachable 60 s", redis_unreachable_60s,
             budget=200, settings={"TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "3000"}),
    Scenario("redis-out-of-memory", "11 Redis out of memory", redis_out_of_memory),
    Scenario("redis-down-past-hold-empty", "#10 Redis down past the edge's hold, back empty",
             redis_down_past_the_hold, fast=True,
             settings={"TOKENWIRE_EDGE_REDIS_OUTAGE_SECONDS": "1"}),
    Scenario("redis-down-40s-empty", "#10 Redis down 40 s, back empty: no job lost",
             redis_down_40s, budget=180),
    Scenario("worker-sigterm-slots-busy", "#10 SIGTERM a worker with every slot busy",
             sigterm_with_every_slot_busy,
             settings={"TOKENWIRE_WORKER_CONCURRENCY": "2",
                       "TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "10000"}),
    Scenario("poisoned-live-messages", "#10 malformed live messages", poisoned_live_messages),
    Scenario("edge-killed-under-load", "12 edge killed under load", edge_killed_under_load,
             fast=True),
    Scenario("cursors-that-cannot-continue", "13 other-epoch/ahead/trimmed/expired cursors",
             cursors_that_cannot_continue,
             settings={"TOKENWIRE_EVENTS_MAXLEN": "10", "TOKENWIRE_EVENTS_TTL_SECONDS": "1"},
             # MAXLEN ~ trims whole stream nodes: small nodes make it trim here.
             valkey_config={"stream-node-max-entries": "5"}),
    Scenario("upstream-truncates", "14 stream ends without finish reason", upstream_truncates),
    Scenario("upstream-goes-silent", "15 silence and slow drip", upstream_goes_silent,
             settings={"TOKENWIRE_UPSTREAM_MAX_GAP_SECONDS": "1",
                       "TOKENWIRE_UPSTREAM_DEADLINE_SECONDS": "3"}),
    Scenario("upstream-refuses-then-recovers", "16 429/503 before, cut after first token",
             upstream_refuses_then_recovers, fast=True),
    Scenario("cancel-anywhere", "17 cancel queued/running/ended, REST and WS",
             cancel_anywhere, fast=True),
    Scenario("abandoned-streams-stop", "18 on_disconnect across edges", abandoned_streams_stop,
             fast=True),
    *CLUSTER_SCENARIOS,
)
