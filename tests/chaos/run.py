"""What a scenario works with: a cluster, clients that record, faults that are
counted, and the checker's verdicts."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from tests.chaos.checker import ClientRecord, Verdict, check
from tests.chaos.clients import follow
from tests.chaos.cluster import Cluster
from tests.support.fake_openai import completion_for
from tests.support.httpx_follower import follow_with_httpx_sse

if TYPE_CHECKING:  # scenario.py imports this module
    from tests.chaos.scenario import Scenario


@dataclass
class Outcome:
    scenario: str
    clients: int = 0
    faults: list[str] = field(default_factory=list)
    events: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    resets: int = 0  # reset events clients received
    #: the time until every stream live at the fault delivered again (s),
    #: for those the fault hit and for the others (cluster scenarios)
    recovery: dict[str, float] = field(default_factory=dict)


class Run:
    """One scenario's run: create streams, attach clients, inject faults, check."""

    def __init__(self, cluster: Cluster, session: aiohttp.ClientSession, name: str) -> None:
        self.cluster = cluster
        self.session = session
        self.outcome = Outcome(name)
        self._prompts: dict[str, str] = {}
        self._clients: list[asyncio.Task[ClientRecord]] = []
        self._serial = 0
        self.records: list[ClientRecord] = []  # of the last finish()

    def prompt(self, directives: str = "") -> str:
        self._serial += 1
        return f"{directives} {self.outcome.scenario} {self._serial}".strip()

    async def wait_for_meta(self, stream_id: str, field_name: str, *, equal: str | None = None,
                            differ: str | None = None, seconds: float = 20) -> None:
        """Poll the stream's meta hash until ``field_name`` equals ``equal`` (or
        differs from ``differ``)."""
        async with asyncio.timeout(seconds):
            while True:
                value = (await self.cluster.meta(stream_id)).get(field_name)
                if (equal is not None and value == equal) or (
                        differ is not None and value != differ):
                    return
                await asyncio.sleep(0.05)

    def fault(self, description: str) -> None:
        self.outcome.faults.append(description)

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.outcome.violations.append(message)

    async def create(self, prompt: str, edge: int = 0, **body: Any) -> str:
        """POST a job (retrying while the edge answers 503)."""
        url = f"{self.cluster.edge_urls[edge]}/v1/streams"
        async with asyncio.timeout(30):
            while True:
                async with self.session.post(url, json={"prompt": prompt, **body}) as response:
                    if response.status == 202:
                        stream_id: str = (await response.json())["id"]
                        self._prompts[stream_id] = prompt
                        return stream_id
                    if response.status != 503:
                        raise AssertionError(f"POST: {response.status} {await response.text()}")
                await asyncio.sleep(0.3)

    def watch(self, stream_id: str, viewers: int = 2, *, drop: float = 0.05,
              deadline: float = 60.0) -> None:
        """Attach ``viewers`` clients, spread over the edges, dropping at random."""
        for index in range(viewers):
            record = ClientRecord(f"c{len(self._clients)}", stream_id)
            self._clients.append(asyncio.create_task(follow(
                self.session, self.cluster.edge_urls, record, drop_probability=drop,
                deadline=deadline, first_edge=index)))

    def watch_with_httpx_sse(self, stream_id: str, viewers: int = 1, *,
                             deadline: float = 60.0) -> None:
        """Attach ``viewers`` httpx-sse clients (the README-style resume loop)."""
        for index in range(viewers):
            record = ClientRecord(f"httpx-sse-c{len(self._clients)}", stream_id)
            self._clients.append(asyncio.create_task(follow_with_httpx_sse(
                self.cluster.edge_urls, record, deadline=deadline, first=index)))

    async def finish(self, *, expect: str = "done", code: str | None = None,
                     max_resets: int | None = None) -> list[Verdict]:
        """Wait for every client, check each, and require its terminal event to be
        ``expect`` (with ``code``) and at most ``max_resets`` resets."""
        records = await asyncio.gather(*self._clients)
        self.records = list(records)
        verdicts = []
        for record in records:
            verdict = check(record, "".join(completion_for(self._prompts[record.stream_id])))
            verdicts.append(verdict)
            self.outcome.clients += 1
            self.outcome.events += len(record.events)
            self.outcome.violations += verdict.violations
            self.outcome.resets += verdict.resets
            end = verdict.terminal
            if end is None:
                continue
            name = record.client
            self.require(end.type == expect, f"{name}: ended with {end.type} {end.data}")
            if code is not None:
                got = end.data.get("code", end.data.get("finish_reason"))
                self.require(got == code, f"{name}: ended with {got}, expected {code}")
            if max_resets is not None:
                self.require(verdict.resets <= max_resets,
                             f"{name}: {verdict.resets} resets (at most {max_resets})")
        self._clients = []
        return verdicts


def silence_after(records: list[ClientRecord], fault_at: float,
                  streams: Collection[str]) -> float | None:
    """The longest a stream of ``streams`` that was live at ``fault_at`` (it had
    delivered, and had not ended) went without delivering anything to any of
    its clients, counted from the fault on (seconds); None if none was live."""
    longest: float | None = None
    for stream_id in streams:
        arrivals = sorted(e.at for r in records if r.stream_id == stream_id for e in r.events)
        ended = min((e.at for r in records if r.stream_id == stream_id for e in r.events
                     if e.type in ("done", "error")), default=None)
        if not arrivals or arrivals[0] > fault_at or (ended is not None and ended <= fault_at):
            continue
        gaps = [later - max(earlier, fault_at) for earlier, later in itertools.pairwise(arrivals)
                if later > fault_at]
        silence = max(gaps, default=0.0)
        longest = silence if longest is None else max(longest, silence)
    return longest


async def run_scenario(scenario: Scenario, log_root: Path) -> Outcome:
    """Start a fresh cluster for ``scenario``, run it, stop every process."""
    started = time.monotonic()
    log_dir = log_root / scenario.name
    log_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(log_dir, scenario.settings, valkey_config=scenario.valkey_config,
                      valkey_cluster=scenario.valkey_cluster)
    try:
        await cluster.start()
        async with aiohttp.ClientSession() as session:
            run = Run(cluster, session, scenario.name)
            try:
                async with asyncio.timeout(scenario.budget):
                    await scenario.body(run)
            except TimeoutError:
                run.outcome.violations.append(f"did not finish within {scenario.budget} s")
            except Exception as exc:  # a broken expectation inside the scenario
                run.outcome.violations.append(f"scenario failed: {exc!r}")
    finally:
        await cluster.close()
    run.outcome.seconds = time.monotonic() - started
    return run.outcome
