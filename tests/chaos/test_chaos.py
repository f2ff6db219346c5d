"""The fast chaos scenarios, in ``make test``; ``make chaos`` runs the full matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.run import run_scenario
from tests.chaos.scenario import Scenario
from tests.chaos.scenarios import SCENARIOS

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.fast], ids=lambda s: s.name)
async def test_fault_leaves_every_client_with_exact_text(scenario: Scenario,
                                                         tmp_path: Path) -> None:
    outcome = await run_scenario(scenario, tmp_path)
    assert outcome.faults, "no fault was injected"
    assert outcome.clients > 0 and outcome.events > 0
    assert outcome.violations == [], f"logs in {tmp_path / scenario.name}"
