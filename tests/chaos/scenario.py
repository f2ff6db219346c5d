"""One scenario of the fault matrix: its fault, its body, the cluster it runs on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # run.py imports this module
    from tests.chaos.run import Run


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: str  # the fault number(s) and a few words
    body: Callable[[Run], Awaitable[None]]
    fast: bool = False
    budget: float = 90.0  # seconds, cluster start excluded
    settings: dict[str, str] = field(default_factory=dict)
    valkey_config: dict[str, str] = field(default_factory=dict)
    #: run on a Valkey Cluster (3 masters, a replica each), in cluster mode
    valkey_cluster: bool = False
