"""What the protocol costs at run time: a seeded random long run of the model.

The seed's complaint about the premature clear is not a hang but churn: AVIC
toggled often, apicv_update_lock taken often. A long random schedule of N
simulated vCPUs (calls unbounded) counts, per request a vCPU makes, how
often AVIC's inhibition toggles and how often the update lock is taken.
These figures come from the model, not from a running kernel; the same seed
gives the same numbers.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from kaudit.model.code import Protocol
from kaudit.model.machine import ACTIVE, IDLE, Machine


@dataclass(frozen=True)
class Cost:
    vcpus: int
    steps: int
    seed: int
    requests: int
    toggles: int
    premature_clears: int  # AVIC un-inhibited while some vCPU still demanded it
    lock_acquisitions: int
    toggles_per_request: float
    locks_per_request: float

    def to_json(self) -> dict:
        return asdict(self)


def simulate(protocol: Protocol, vcpus: int = 4, steps: int = 20_000, seed: int = 0) -> Cost:
    machine = Machine(protocol, vcpus)  # calls unbounded, uncounted: states recur, their moves are remembered
    rng = random.Random(seed)
    state = machine.initial()
    requests = toggles = locks = premature = 0
    word = protocol.word
    for _ in range(steps):
        options = [move for me in range(vcpus) for move in machine.moves(state, me)]
        if not options:
            break
        _, nxt, acquired = rng.choice(options)
        before, after = bool(state[0][word]), bool(nxt[0][word])
        toggles += before != after
        premature += before and not after and any(t[5] == ACTIVE for t in nxt[1][:vcpus])
        locks += acquired
        requests += sum(1 for old, new in zip(state[1][:vcpus], nxt[1][:vcpus], strict=True)
                        if old[5] == IDLE and new[5] != IDLE)
        state = nxt
    per = max(requests, 1)
    return Cost(vcpus, steps, seed, requests, toggles, premature, locks, round(toggles / per, 3),
                round(locks / per, 3))
