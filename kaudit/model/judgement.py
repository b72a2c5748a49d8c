"""The model's judgement of one protocol, cached by the protocol's content.

Exploring every interleaving is most of a warm run's time, and its answer
depends only on the extracted protocol, the settings and kaudit's own code
(all of it: the model reads kaudit.ir's names and nodes too): the same
protocol (the same tree, a patch that does not touch it, a re-run) reuses
the judgement; any change to the code the protocol was extracted from
changes the protocol, hence the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kaudit.cache import Store, digest_bytes, package_digest, salt
from kaudit.model.code import Protocol
from kaudit.model.explore import Outcome


@dataclass(frozen=True)
class Proof:
    """The discipline a verified protocol follows, and what its proof relied on."""

    discipline: str
    why: str
    relied: dict[str, bool]


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    proof: Proof | None  # for a verified inhibit protocol
    cost: dict | None  # the cost simulation of a violated inhibit protocol

    def to_json(self, protocol: Protocol) -> dict[str, Any]:
        culprit = next((pc for pc, op in enumerate(protocol.code) if op is self.outcome.culprit), None)
        return {"outcome": {**self.outcome.to_json(), "culprit": culprit, "culprit_entry": self.outcome.culprit_entry},
                "proof": None if self.proof is None else [self.proof.discipline, self.proof.why, self.proof.relied],
                "cost": self.cost}

    @staticmethod
    def from_json(raw: Any, protocol: Protocol) -> Judgement | None:
        """The stored judgement, None for an entry of any other shape (recomputed)."""
        try:
            o = raw["outcome"]
            culprit = protocol.code[o["culprit"]] if o["culprit"] is not None else None
            outcome = Outcome(str(o["status"]), str(o["violation"]), int(o["vcpus"]), int(o["states"]),
                              bool(o["bound_hit"]), list(o["trace"]), culprit, str(o["culprit_entry"]),
                              [str(a) for a in o["assumes"]])
            proof = raw["proof"]
            return Judgement(outcome, None if proof is None else Proof(str(proof[0]), str(proof[1]),
                                                                       {str(k): bool(v) for k, v in proof[2].items()}),
                             raw["cost"] if isinstance(raw["cost"], dict) else None)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return None


def cached(store: Store | None, protocol: Protocol, settings: Any,
           judge: Callable[[Protocol], Judgement]) -> Judgement:
    """judge(protocol), from the cache when this protocol was judged with these settings before."""
    if store is None:
        return judge(protocol)
    digest = digest_bytes("\0".join([salt(package_digest()), repr(settings), repr(protocol)]).encode())
    raw = store.memo("model", digest, lambda: judge(protocol).to_json(protocol),
                     lambda raw: raw if Judgement.from_json(raw, protocol) is not None else None)
    return Judgement.from_json(raw, protocol)  # the same object whether judged now or before
