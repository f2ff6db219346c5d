"""The benchmark's outputs: JSON, a markdown table with ratios, a latency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def _by(results: list[dict[str, Any]], scenario: str, design: str) -> dict[str, Any] | None:
    return next((r for r in results if r["scenario"] == scenario and r["design"] == design),
                None)


def _field(result: dict[str, Any] | None, *path: str) -> float | None:
    """``result[path[0]][path[1]]...``, None where a level is missing."""
    value: Any = result
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value if isinstance(value, int | float) else None


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "-"
    return f"{a / b:.2f}x"


def markdown(payload: dict[str, Any]) -> str:
    results = payload["results"]
    m = payload["machine"]
    lines = [
        f"### Benchmark {payload['when']}{' (quick)' if payload['quick'] else ''}",
        "",
        f"Machine: {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['platform']}, "
        f"Python {m['python']}. Valkey, producer, edge and load generator share it "
        "(box CPU %: all cores, all processes, 100 = every core busy).",
        "",
        "| scenario | design | clients | tok/s delivered | frames/token | p50 ms | p99 ms "
        "| p99.9 ms | edge CPU % | box CPU % | edge RSS MiB | KiB/conn | Redis conns "
        "| reads/event |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r["latency_ms"]
        lines.append(
            f"| {r['scenario']} | {r['design']} | {r['connected']}/{r['clients']} "
            f"| {r['tokens_per_second']:g} | {r['frames_per_token']:g} "
            f"| {lat.get('p50', '-')} | {lat.get('p99', '-')} | {lat.get('p99.9', '-')} "
            f"| {r['edge_cpu_percent']:g} | {r.get('box_cpu_percent', '-')} "
            f"| {r['edge_rss_mib']:g} "
            f"| {r['rss_per_connection_kib']:g} | {r['redis_connections']} "
            f"| {r['redis_reads_per_event'] if r['tokens_per_second'] > 1 else '-'} |")
    lines += ["", "Tokenwire relative to the references (same scenario, same run):", "",
              "| scenario | p99 vs raw | p99 vs naive | CPU vs naive | tok/s vs raw |",
              "|---|---|---|---|---|"]
    for scenario in dict.fromkeys(r["scenario"] for r in results):
        tw = _by(results, scenario, "tokenwire")
        raw = _by(results, scenario, "raw")
        naive = _by(results, scenario, "naive")
        if tw is None or (raw is None and naive is None):
            continue
        p99 = tw["latency_ms"].get("p99")
        lines.append(
            f"| {scenario} "
            f"| {_ratio(p99, _field(raw, 'latency_ms', 'p99'))} "
            f"| {_ratio(p99, _field(naive, 'latency_ms', 'p99'))} "
            f"| {_ratio(tw['edge_cpu_percent'], _field(naive, 'edge_cpu_percent'))} "
            f"| {_ratio(tw['tokens_per_second'], _field(raw, 'tokens_per_second'))} |")
    lines += _scaled_table(results)
    lines += _cpu_table(results, m["cpus"])
    writes = payload.get("worker_writes") or []
    if writes:
        lines += ["", "Worker: Redis writes per model token (real worker, simulated provider, "
                      "20 concurrent jobs; round trips = socket reads Valkey processed for "
                      "the worker, startup and job reads included):", "",
                  "| buffer | tokens/s per stream | tokens | append calls | calls/token "
                  "| round trips | round trips/token |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {w['buffer']} | {w['rate']:g} | {w['tokens']} | {w['writes']} "
                  f"| {w['writes_per_token']:g} | {w.get('round_trips', '-')} "
                  f"| {w.get('round_trips_per_token', '-')} |" for w in writes]
    slow = [r for r in results if r.get("slow")]
    for r in slow:
        s = r["slow"]
        lines += ["", f"Slow clients ({r['scenario']}, {r['design']}): of {s['clients']}, "
                      f"{s['exact']} finished with exactly the stored text, "
                      f"{s.get('unfinished_prefix_exact', 0)} were still catching up with an "
                      f"exact prefix, {s.get('violations', '?')} violations; "
                      f"{s['reconnects']} reconnects, {s['slow_consumer_events']} "
                      f"slow_consumer disconnects."]
    return "\n".join(lines) + "\n"


def _scaled_table(results: list[dict[str, Any]]) -> list[str]:
    """Tokenwire as deployments scale it, beside its single-process figures on
    standalone Valkey (same scenario, same run)."""
    scaled = ("tokenwire", "tokenwire-2edges", "tokenwire-cluster")
    rows = [r for r in results if r["design"] in scaled[1:]]
    if not rows:
        return []
    lines = ["", "Scaled out (edge CPU and RSS added over edge processes, Valkey CPU over "
                 "its processes, Redis connections of the edges over every master):", "",
             "| scenario | design | tok/s delivered | p50 ms | p99 ms | edge CPU % "
             "| edge RSS MiB | Valkey CPU % | Redis conns |",
             "|---|---|---|---|---|---|---|---|---|"]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for design in scaled:
            r = _by(results, scenario, design)
            if r is None:
                continue
            lat = r["latency_ms"]
            lines.append(
                f"| {scenario} | {design} | {r['tokens_per_second']:g} "
                f"| {lat.get('p50', '-')} | {lat.get('p99', '-')} | {r['edge_cpu_percent']:g} "
                f"| {r['edge_rss_mib']:g} | {r.get('cpu_by_process', {}).get('valkey', '-')} "
                f"| {r['redis_connections']} |")
    return lines


def _cpu_table(results: list[dict[str, Any]], cpus: int) -> list[str]:
    """Where the box CPU went: % of one core per process over the window."""
    rows = [r for r in results if r.get("cpu_by_process")]
    if not rows:
        return []
    names = ("edge", "valkey", "producer", "loadgen")
    lines = ["", f"CPU by process over the window (% of one core; all {cpus} cores "
                 f"= {cpus * 100}):", "",
             "| scenario | design | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for r in rows:
        cpu = r["cpu_by_process"]
        lines.append(f"| {r['scenario']} | {r['design']} | "
                     + " | ".join(f"{cpu[n]:g}" if n in cpu else "-" for n in names) + " |")
    return lines


def plot(payload: dict[str, Any], path: Path) -> bool:
    sweep = [r for r in payload["results"] if r["scenario"].startswith("sweep-")]
    if not sweep:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for design, colour in (("tokenwire", "tab:blue"), ("raw", "tab:green"),
                           ("naive", "tab:red")):
        points = sorted((r["streams"] * r["rate"] * r["viewers"], r) for r in sweep
                        if r["design"] == design and r["latency_ms"])
        if not points:
            continue
        offered = [p[0] for p in points]
        for axis, key in zip(axes, ("p50", "p99"), strict=True):
            axis.plot(offered, [p[1]["latency_ms"][key] for p in points], "o-", color=colour,
                      label=design)
    for axis, key in zip(axes, ("p50", "p99"), strict=True):
        axis.set_xlabel("offered load (tokens/s to clients)")
        axis.set_ylabel(f"{key} append->client latency (ms)")
        axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle(f"Tokenwire edge vs references, {payload['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(payload: dict[str, Any], folder: Path, stamp: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stamp}.json", folder / f"{stamp}.md"]
    paths[0].write_text(json.dumps(payload, indent=2))
    paths[1].write_text(markdown(payload))
    if plot(payload, folder / f"{stamp}.png"):
        paths.append(folder / f"{stamp}.png")
    return paths
