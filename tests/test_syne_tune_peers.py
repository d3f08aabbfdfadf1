"""Syne Tune's multi-objective searchers as proposers of the search simulator
(`benchmarks/syne_tune_peers.py`), on the committed digits table: each spends its budget, repeats
itself per seed and not across seeds, never trains a row twice or an architecture over the budget,
finds a front, and is told every objective minimised with each result paired to its own
configuration."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("syne_tune")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from ground_truth import TableFiles  # noqa: E402
from simulate import FullBudget, Hypervolume, Table, simulate  # noqa: E402
from syne_tune_peers import PEERS, SyneTuneProposer  # noqa: E402

BUDGET = 54  # epochs: 6 full-budget trials of the digits table's 9


def _searcher_available(key: str) -> bool:
    return key != "ehvi" or importlib.util.find_spec("botorch") is not None


KEYS = [pytest.param(key, marks=pytest.mark.skipif(not _searcher_available(key),
                                                   reason=f"{key} needs botorch"))
        for key in PEERS.values()]


@pytest.fixture(scope="module")
def table() -> Table:
    return Table.load()


@pytest.fixture(scope="module")
def searches(table: Table) -> dict:
    """(key, seed, run) -> (proposer, trace), each search run once for the whole module."""
    done: dict = {}

    def run(key: str, seed: int, again: int = 0):
        if (key, seed, again) not in done:
            proposer = SyneTuneProposer(table, key, seed)
            done[key, seed, again] = proposer, simulate(table, proposer, FullBudget(), BUDGET)
        return done[key, seed, again]
    return run


def _rows(trace) -> list[int]:
    return [t.row for t in trace.trials]


@pytest.mark.parametrize("key", KEYS)
def test_a_search_spends_its_budget_once_per_row_and_finds_a_front(table, searches, key):
    _, trace = searches(key, 0)
    assert trace.compute == BUDGET
    rows = _rows(trace)
    assert len(rows) == len(set(rows)), "a table row was trained twice"
    assert all(table.fits[table.arch_ids[r]] for r in rows)
    assert Hypervolume.of_table(table)(table.final[trace.completed_rows()]) > 0


@pytest.mark.parametrize("key", KEYS)
def test_same_seed_same_trials_other_seed_other_trials(searches, key):
    _, first = searches(key, 0)
    _, again = searches(key, 0, again=1)
    _, other = searches(key, 1)
    assert _rows(first) == _rows(again)
    assert [(t.start_s, t.status) for t in first.trials] == \
        [(t.start_s, t.status) for t in again.trials]
    assert _rows(first) != _rows(other)


@pytest.mark.parametrize("key", KEYS)
def test_the_searcher_is_told_minimised_metrics_of_its_own_configuration(table, key):
    told = []
    proposer = SyneTuneProposer(table, key, seed=2)
    complete = proposer.searcher.on_trial_complete

    def spy(trial_id, config, metrics):
        told.append((config, metrics))
        complete(trial_id, config, metrics)

    proposer.searcher.on_trial_complete = spy
    trace = simulate(table, proposer, FullBudget(), BUDGET)
    assert len(told) >= len(trace.completed_rows()) > 0
    signs = np.array([-1.0 if d == "max" else 1.0 for d in table.directions])
    for config, metrics in told:  # a duplicate is told its twin's values: the same row's
        row = table.nearest(proposer.architecture(config))
        assert metrics == pytest.approx(list(signs * table.final[row]))


def test_ehvi_pairs_each_result_with_its_configuration(table, searches):
    if not _searcher_available("ehvi"):
        pytest.skip("ehvi needs botorch")
    proposer, trace = searches("ehvi", 0)
    searcher = proposer.searcher
    configs = searcher._configs_with_results()
    observed = searcher.objectives()  # scaled per objective: best 3.1 below, worst 2.1 below 0
    assert len(configs) == len(observed) >= len(trace.completed_rows())
    assert observed.min() == pytest.approx(-3.1) and observed.max() == pytest.approx(-2.1)
    signs = np.array([-1.0 if d == "max" else 1.0 for d in table.directions])
    truth = np.array([signs * table.final[table.nearest(proposer.architecture(c))]
                      for c in configs])
    for j in range(truth.shape[1]):  # the scaling is monotone: same order per objective
        assert np.argsort(observed[:, j], kind="stable").tolist() == \
            np.argsort(truth[:, j], kind="stable").tolist()
    # pending: only the trials still training when the budget ran out (no errored, over-budget
    # or duplicate one is fantasised on)
    assert len(searcher.pending_trials) == len(proposer.trained) - len(trace.trials)


class _CountingFits(dict):
    """The table's budget check, counting the over-budget architectures it was asked about."""

    refused = 0

    def get(self, key, default=None):
        value = super().get(key, default)
        self.refused += not value
        return value


@pytest.mark.parametrize("key", KEYS)
def test_an_architecture_over_the_budget_is_never_trained(table, key):
    costs = pd.read_parquet(TableFiles("digits").costs, columns=["arch_id", "layout"])
    layout = dict(zip(costs["arch_id"], costs["layout"]))
    fits = _CountingFits({a: ok and layout[a] != "C-C-C-C" for a, ok in table.fits.items()})
    narrowed = dataclasses.replace(table, fits=fits)
    trace = simulate(narrowed, SyneTuneProposer(narrowed, key, seed=3), FullBudget(), BUDGET)
    assert trace.compute == BUDGET
    assert fits.refused > 0  # the searcher did propose some, at no cost
    assert all(table.layouts[t.row] != "C-C-C-C" for t in trace.trials)


def test_an_unknown_searcher_is_named(table):
    with pytest.raises(ValueError, match="searcher 'tpe'"):
        SyneTuneProposer(table, "tpe", seed=0)
