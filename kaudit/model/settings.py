"""How the runtime model runs: its own module, so a run that only reads its cached report need not
load the model."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSettings:
    vcpus: int = 3
    calls: int = 0  # entry calls per vCPU (0: as many as the state space allows)
    env_calls: int = 0
    max_states: int = 1_000_000
    sim_vcpus: int = 4
    sim_steps: int = 4_000
    seed: int = 0
