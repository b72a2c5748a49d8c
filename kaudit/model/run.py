"""Judge every key of every rule, the keys shared among worker processes.

Keys are independent: each extracts its own protocol from the same analyses
and explores it, and extraction is most of a cold run's model time (6.12's
heaviest keys take several seconds each). Forked workers read the analyses
the parent built, judge one key per task and send back its protocol and
judgement; the parent applies them in report order, so the report is the
same for any number of workers. A worker opens the judgement cache afresh:
a SQLite connection must not cross a fork.
"""

from __future__ import annotations

from pathlib import Path

from kaudit.analysis.results import Analysis
from kaudit.cache import Store
from kaudit.model.check import KeyTask, apply_judgement, judged, mark_unjudged, model_tasks
from kaudit.model.code import Protocol
from kaudit.model.extract import Unmodelled
from kaudit.model.judgement import Judgement
from kaudit.model.settings import ModelSettings
from kaudit.rules import Rule
from kaudit.workers import Failed, Limits, run_tasks

MODEL_LIMITS = Limits(seconds=None)  # a slow key is slow, not hung: its exploration is bounded by states

Result = tuple[Protocol | Unmodelled, Judgement | None]
_forked: tuple[list[Rule], list[Analysis], ModelSettings, Path | None] | None = None  # what a worker reads


def judge_all(rules: list[Rule], analyses: list[Analysis], settings: ModelSettings, store: Store | None,
              jobs: int) -> None:
    """Judge every key (in `jobs` processes when more than one) and apply the verdicts in report order."""
    global _forked
    tasks = model_tasks(rules, analyses)
    if jobs <= 1 or len(tasks) <= 1:
        results = [judged(analyses[t.rule], rules[t.rule], t.key, settings, store) for t in tasks]
    else:
        _forked = (rules, analyses, settings, store.directory if store is not None else None)
        try:
            done: dict[int, Result] = {}
            for i, result in run_tasks(_judge_task, tasks, jobs, MODEL_LIMITS, _model_failure):
                if isinstance(result, Failed):
                    raise RuntimeError(f"{result.message} (key {tasks[i].key})")
                done[i] = result
            results = [done[i] for i in range(len(tasks))]
        finally:
            _forked = None
    for rule, analysis in zip(rules, analyses, strict=True):
        mark_unjudged(analysis, rule)
    for task, (protocol, judgement) in zip(tasks, results, strict=True):
        apply_judgement(analyses[task.rule], rules[task.rule], task.key, protocol, judgement)


_worker_store: Store | None = None


def _judge_task(task: KeyTask) -> Result:
    global _worker_store
    assert _forked is not None
    rules, analyses, settings, cache_dir = _forked
    if cache_dir is not None and _worker_store is None:
        _worker_store = Store(cache_dir)
    return judged(analyses[task.rule], rules[task.rule], task.key, settings, _worker_store)


def _model_failure(err: BaseException, limits: Limits) -> str:
    return f"kaudit: internal error in a runtime model worker: {type(err).__name__}: {err}"
