"""Never train the same config twice: a Ray Tune `Searcher` that wraps the sweep's OptunaSearch.

Our trials are deterministic for a given config and seed, but Optuna treats objectives as noisy and
its TPE sampler re-proposes configs it has seen (in a categorical space it does so again and again
once it believes one config is best: optuna issues 2021, 4237, 5440). `DedupSearcher` sits between
Tune and the OptunaSearch, as Ray's own `ConcurrencyLimiter` does, and for every proposal:

- a config that already ran: the inner searcher is told the earlier result for its new trial (what
  Optuna's FAQ does for duplicates: return the stored value), nothing is trained, and it is asked
  again. A trial ASHA stopped early counts with its last reported result: that is exactly what
  Optuna was told for it (Tune completes a stopped trial with its last result), so the duplicate
  tells it nothing new. A failed trial is answered as failed (Tune already retried it max_failures
  times). With two objectives (metric2, NSGA-II) the stored result carries both metrics.
- a config that is running: its Optuna trial is held and completed with that trial's result when it
  ends, and the searcher is asked again at once, so a repeat never leaves a GPU share idle (a sweep
  that waited ran its trials one after another where they could have run side by side). Only when
  every ask of a `suggest` repeats a running config in a space with a continuous domain does it
  return None (Tune asks later).
- after `max_asks` duplicates in a row within one `suggest`, TPE has converged on configs it has
  already seen (re-asking without new data mostly gives the same answer): in a finite space the
  untried config nearest to the last proposal (fewest paths changed, ties broken by a seeded draw)
  is enqueued in the study and proposed instead; in a space with a continuous domain the sweep stops
  with a line saying so.
- once every config of a finite space (every domain a `choice`) has been tried, it returns
  `Searcher.FINISHED` with "all N configs of the space were tried".

Configs are compared as Optuna stores them (`distribution.to_internal_repr`: a choice's index, a
number as a float), at every search-space path. The state (what ran, the results, the counts) is
saved and restored with the experiment through `get_state`/`set_state` (Tune's SearchGenerator
saves every wrapper that has a `.searcher`), so `qlora-sweep resume` keeps the guarantee.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import random
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.utils import flatten_dict

log = logging.getLogger(__name__)
MAX_ASKS = 3


def config_key(dists: dict[str, Any], config: dict) -> tuple:
    """The config as Optuna stores it (`dists`: path -> Optuna distribution), at every search-space path."""
    flat = flatten_dict(config, delimiter="/")
    return tuple((path, dist.to_internal_repr(flat[path])) for path, dist in sorted(dists.items()))


class DedupSearcher(Searcher):
    """Wraps an OptunaSearch so that no config is trained twice (see the module docstring)."""

    def __init__(self, searcher: OptunaSearch, seed: int = 0, max_asks: int = MAX_ASKS):
        self.searcher = searcher
        self.seed, self.max_asks = seed, max_asks
        self.dists: dict[str, Any] = {}  # path -> Optuna distribution, from the Tune space
        self.known: dict[tuple, tuple[dict | None, bool]] = {}  # config key -> (result, error)
        self.running: dict[tuple, str] = {}  # config key -> Tune trial id
        self.trials: dict[str, tuple[str, tuple]] = {}  # Tune trial id -> (inner trial id, config key)
        self.held: dict[tuple, list[str]] = {}  # running config key -> inner trial ids to answer at its end
        self.answered = 0  # proposals answered from earlier trials
        self.asks = 0
        self.finished: str | None = None  # why the searcher stopped, when it did
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    # ------------------------------------------------------------ what Tune calls

    def set_search_properties(self, metric, mode, config: dict, **spec) -> bool:
        ok = self.searcher.set_search_properties(metric, mode, config, **spec)
        self.dists = OptunaSearch.convert_search_space(config or {})
        self._metric, self._mode = self.searcher.metric, self.searcher.mode
        return ok

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return False  # Tune's ConcurrencyLimiter (outside this wrapper) limits concurrency

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.finished:
            return Searcher.FINISHED
        size = self.space_size()
        repeats_running = False
        for _ in range(self.max_asks):
            if size is not None and len(self.known) + len(self.running) >= size:
                return self._finish(f"all {size} configs of the space were tried")
            inner_id = f"{trial_id}~{self.asks}"
            self.asks += 1
            config = self.searcher.suggest(inner_id)
            if config in (None, Searcher.FINISHED):
                return config
            key = self.key(config)
            if key in self.running:
                self.held.setdefault(key, []).append(inner_id)
                repeats_running = True
                continue
            if key not in self.known:
                return self._start(trial_id, inner_id, key, config)
            self._answer(inner_id, key)
        if size is None:
            if repeats_running:
                return None  # the running trial may change the searcher's mind: ask again later
            return self._finish(
                f"the searcher proposed only configs already tried ({self.max_asks} in a row)"
            )
        return self._start_nearest(trial_id, key)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.trials:
            self.searcher.on_trial_result(self.trials[trial_id][0], result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self.trials:
            return
        inner_id, key = self.trials.pop(trial_id)
        self.running.pop(key, None)
        if result is not None or error:  # result None without error: removed before it ran
            self.known[key] = (self._slim(result), error)
        self.searcher.on_trial_complete(inner_id, result=result, error=error)
        for held_id in self.held.pop(key, []):
            if key in self.known:
                self._answer(held_id, key)
            else:
                self.searcher.on_trial_complete(held_id)

    def get_state(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "searcher"})

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    # ------------------------------------------------------------ our own

    def key(self, config: dict) -> tuple:
        return config_key(self.dists, config)

    def space_size(self) -> int | None:
        """The number of configs when every domain is a choice, else None."""
        sizes = [len(getattr(d, "choices", ())) for d in self.dists.values()]
        return math.prod(sizes) if self.dists and all(sizes) else None

    def stats(self) -> dict:
        """For the summary and the report."""
        return {
            "answered": self.answered,
            "tried": len(self.known) + len(self.running),
            "space_size": self.space_size(),
            "finished": self.finished,
        }

    def _start(self, trial_id: str, inner_id: str, key: tuple, config: dict) -> dict:
        self.running[key] = trial_id
        self.trials[trial_id] = (inner_id, key)
        return config

    def _answer(self, inner_id: str, key: tuple) -> None:
        """Complete a duplicate's Optuna trial with the known result: nothing new learnt, nothing trained."""
        result, error = self.known[key]
        self.searcher.on_trial_complete(inner_id, result=result, error=error)
        self.answered += 1

    def _finish(self, reason: str) -> str:
        self.finished = reason
        log.info("search finished: %s", reason)
        return Searcher.FINISHED

    def _start_nearest(self, trial_id: str, proposed: tuple) -> dict:
        """The untried config with the fewest paths changed from `proposed`, enqueued in the study."""
        paths = [p for p, _ in proposed]
        tried = set(self.known) | set(self.running)
        best, rng = None, random.Random(f"{self.seed}-{self.asks}")
        for values in itertools.product(*(range(len(self.dists[p].choices)) for p in paths)):
            key = tuple(zip(paths, values))
            if key in tried:
                continue
            rank = (sum(a != b for (_, a), (_, b) in zip(key, proposed)), rng.random())
            if best is None or rank < best[0]:
                best = (rank, key)
        params = {p: self.dists[p].to_external_repr(i) for p, i in best[1]}
        self.searcher._ot_study.enqueue_trial(params)  # OptunaSearch has no public enqueue
        inner_id = f"{trial_id}~{self.asks}"
        self.asks += 1
        config = self.searcher.suggest(inner_id)
        return self._start(trial_id, inner_id, self.key(config), config)

    def _slim(self, result: dict | None) -> dict | None:
        """Only the metrics the inner searcher reads: the state stays small."""
        if result is None:
            return None
        metrics = self.searcher.metric if isinstance(self.searcher.metric, list) else [self.searcher.metric]
        return {m: result[m] for m in metrics if m in result}
