"""A small run of ``make bench``: the harness measures all three designs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.e2e


def test_bench_smoke_run_measures_every_design(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    [result_file] = tmp_path.glob("*.json")
    results = {r["design"]: r for r in json.loads(result_file.read_text())["results"]}
    assert set(results) == {"tokenwire", "raw", "naive"}
    offered = 10 * 10 * 2  # streams x tokens/s x viewers
    for design, result in results.items():
        assert result["connected"] == 20, design
        assert result["tokens_per_second"] > offered * 0.7, design
        assert result["latency_ms"]["p99"] > 0, design
    assert results["tokenwire"]["redis_connections"] <= 4
    assert results["naive"]["redis_connections"] == 20
    table = next(tmp_path.glob("*.md")).read_text()
    assert "p99 vs naive" in table and "| smoke | tokenwire |" in table
