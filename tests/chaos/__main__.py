"""``make chaos``: run the fault matrix, print the table, exit non-zero on any violation.

    python -m tests.chaos                 # every scenario
    python -m tests.chaos --fast          # the ones make test runs
    python -m tests.chaos --only NAME...  # some of them
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path

from tests.chaos.run import Outcome, run_scenario
from tests.chaos.scenarios import SCENARIOS

log = logging.getLogger("tokenwire.chaos")


def table(outcomes: list[Outcome]) -> str:
    rows = ["| scenario | clients | faults injected | events checked | resets | "
            "delivering again after | violations | s |",
            "|---|---|---|---|---|---|---|---|"]
    for outcome in outcomes:
        recovery = ", ".join(f"{what} {seconds:.2f} s"
                             for what, seconds in outcome.recovery.items()) or "-"
        rows.append(f"| {outcome.scenario} | {outcome.clients} | "
                    f"{'; '.join(outcome.faults)} | {outcome.events} | {outcome.resets} | "
                    f"{recovery} | {len(outcome.violations)} | {outcome.seconds:.0f} |")
    return "\n".join(rows)


async def main(names: list[str], fast: bool, log_root: Path) -> list[Outcome]:
    chosen = [s for s in SCENARIOS if (not names or s.name in names) and (s.fast or not fast)]
    outcomes = []
    for index, scenario in enumerate(chosen, 1):
        log.info("[%d/%d] %s (%s)", index, len(chosen), scenario.name, scenario.fault)
        outcome = await run_scenario(scenario, log_root)
        outcomes.append(outcome)
        for violation in outcome.violations:
            log.error("  violation: %s", violation)
        log.info("  %d clients, %d events, %d violations, %.0f s", outcome.clients,
                 outcome.events, len(outcome.violations), outcome.seconds)
    return outcomes


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.chaos")
    parser.add_argument("--fast", action="store_true", help="only the make-test scenarios")
    parser.add_argument("--only", nargs="*", default=[], help="scenario names")
    parser.add_argument("--logs", type=Path, help="keep process logs here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    logs = args.logs or Path(tempfile.mkdtemp(prefix="tokenwire-chaos-"))
    results = asyncio.run(main(args.only, args.fast, logs))
    sys.stdout.write(table(results) + "\n")
    sys.stdout.write(f"process logs: {logs}\n")
    sys.exit(1 if any(outcome.violations for outcome in results) else 0)
