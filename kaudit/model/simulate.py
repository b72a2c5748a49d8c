"""What the protocol costs at run time: a seeded random long run.

The seed's complaint about the premature clear is not a hang but churn: AVIC
toggled often, apicv_update_lock taken often. A long random schedule of N
vCPUs (calls unbounded) counts, per served request (a request completing),
how often the VM-wide bit toggles and how often the update lock is taken.
The same seed gives the same numbers.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from kaudit.model.explore import Explorer
from kaudit.model.protocol import Protocol


@dataclass(frozen=True)
class Cost:
    vcpus: int
    steps: int
    seed: int
    requests: int
    releases: int
    toggles: int
    premature_clears: int  # the bit cleared while another vCPU still demanded it
    lock_acquisitions: int
    toggles_per_request: float
    locks_per_request: float

    def to_json(self) -> dict:
        return asdict(self)


def simulate(protocol: Protocol, vcpus: int = 4, steps: int = 100_000, seed: int = 0) -> Cost:
    explorer = Explorer(protocol, vcpus=vcpus, calls=steps + 1)
    rng = random.Random(seed)
    state = explorer.initial()
    requests = releases = toggles = locks = premature = 0
    for _ in range(steps):
        movers = [i for i in range(vcpus) if next(explorer.moves(state, [i]), None) is not None]
        if not movers:
            break
        i, instr, _, nxt = rng.choice(list(explorer.moves(state, [rng.choice(movers)])))
        toggles += nxt[0] != state[0]
        premature += state[0] == 1 and nxt[0] == 0 and any(cpu[3] for cpu in nxt[2])
        if instr is not None and (instr.op == "acquire" or (instr.op == "bit" and instr.args[1] is not None)):
            locks += instr.args[0] == protocol.update_lock if instr.op == "acquire" else 1
        before, after = state[2][i][3], nxt[2][i][3]
        requests += after and not before
        releases += before and not after
        state = nxt
    per = max(requests, 1)
    return Cost(vcpus, steps, seed, requests, releases, toggles, premature, locks,
                round(toggles / per, 3), round(locks / per, 3))
