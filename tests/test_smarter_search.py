"""The search's smarter parts: multi-fidelity proposals (`nas.multi_fidelity`), rungs placed and
ranked by what the search's own finished trials show (`nas.rungs`: adaptive placement,
learning-curve extrapolation), the zero-cost proxy screen (`evaluators.proxy_score` in
`nas.searcher`), their config fields, and one real search through Ray Tune with all of them on."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from evaluators.proxy_score import ProxyScorer
from evaluators.trial import TrialConfig
from nas.config import SearchConfig
from nas.proposals import Proposals
from nas.rungs import Rungs
from results.layout_study.rankings import kendall_tau_b
from results import run_directory as records
from results.run_directory import RunDirectory
from search_spaces.space import default_space, sample_architecture
from test_search import make_searcher, tiny_config

MAX = "max"


def _study(seed: int = 0) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "maximize"],
                               sampler=optuna.samplers.RandomSampler(seed=seed))


# ---- multi-fidelity proposals ------------------------------------------------------------------

def _observe_random_trials(proposals: Proposals, n: int, epoch: int,
                           good_layout: str, seed: int = 0) -> None:
    """n random trials read at `epoch`: both objectives high exactly for `good_layout`."""
    space, study = proposals.space, _study(seed)
    for i in range(n):
        trial = study.ask()
        arch = sample_architecture(trial, space)
        good = float(arch.layout == good_layout)
        proposals.observe(f"t{i}", trial.params, trial.distributions, epoch,
                          [good + 0.01 * i / n, good])
        study.tell(trial, [0.0, 0.0])


def test_multi_fidelity_proposals_wait_for_enough_readings_then_learn_from_the_richest_epoch():
    space = default_space()
    proposals = Proposals(space, [MAX, MAX], 9, min_points=6, seed=0)
    study = _study()
    assert proposals.propose(study) is None and len(study.trials) == 0  # nothing to learn yet
    _observe_random_trials(proposals, 5, epoch=9, good_layout="C-C-C-C")
    assert proposals.fidelity() is None  # 5 < min_points
    _observe_random_trials(proposals, 40, epoch=3, good_layout="C-T-T-T", seed=1)
    assert proposals.fidelity() == 3  # the latest epoch with enough readings
    layouts = []
    for _ in range(20):
        params = proposals.propose(study)
        trial = study.ask()  # the search asks its own study: it gets the proposal
        layouts.append(sample_architecture(trial, space).layout)
        assert trial.params == params
        study.tell(trial, [0.0, 0.0])
    # learned from the epoch-3 readings: far more C-T-T-T than a random draw's quarter
    assert layouts.count("C-T-T-T") >= 12, layouts
    # a missing reading (NaN) is kept, ranked below every finite one; all-missing is not kept
    proposals.observe("nan", {}, {}, 3, [math.nan, math.nan])
    assert "nan" not in proposals.readings[3]


def test_proposals_are_seeded_and_never_one_the_search_cannot_use():
    def proposals_of(seed):
        p = Proposals(default_space(), [MAX, MAX], 5, min_points=4, seed=seed)
        _observe_random_trials(p, 8, 5, "C-C-T-T")
        study, taken = _study(), set()

        def usable(arch):  # as the searcher has it: not trained already
            return arch.arch_id not in taken
        out = []
        for _ in range(6):
            params = p.propose(study, usable)
            trial = study.ask()
            taken.add(sample_architecture(trial, default_space()).arch_id)
            study.tell(trial, [0.0, 0.0])
            out.append(params)
        return out, taken
    first, taken = proposals_of(0)
    assert proposals_of(0)[0] == first  # the same seed: the same proposals
    assert len(taken) == 6  # fitted on 8 points TPE would repeat its best one; never here
    assert proposals_of(1)[0] != first
    with pytest.raises(ValueError, match="min_points"):
        Proposals(default_space(), [MAX], 1, min_points=1)


# ---- rungs that learn from finished trials ---------------------------------------------------------

def test_kendall_tau_b_matches_scipy_with_ties():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 30).astype(float), rng.integers(0, 5, 30).astype(float)
    assert kendall_tau_b(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert math.isnan(kendall_tau_b(np.ones(5), np.arange(5.0)))


def _curve(final: float, epoch: int, max_t: int) -> tuple[float, float]:
    """Readings that rank trials against their final values before epoch 4, with them from 4 on."""
    value = final * epoch / max_t if epoch >= 4 else 1.0 - final
    return value, value


def test_adaptive_rungs_move_the_first_rung_to_where_readings_start_to_rank():
    rungs = Rungs([("a", MAX), ("b", MAX)], 9, grace_period=1, reduction_factor=3,
                  placement="adaptive", min_completed=5, rank_threshold=0.6)
    assert rungs.epochs == (1, 3)  # as configured until five trials have finished
    for i, final in enumerate([0.2, 0.9, 0.5, 0.7]):
        for epoch in range(1, 10):
            rungs.record(f"t{i}", epoch, _curve(final, epoch, 9))
    assert rungs.epochs == (1, 3) and rungs.rank_agreement(4) is None  # four finished: not yet
    for epoch in range(1, 10):
        rungs.record("t4", epoch, _curve(0.4, epoch, 9))
    assert rungs.rank_agreement(3) == pytest.approx(-1.0)
    assert rungs.rank_agreement(4) == pytest.approx(1.0)
    assert rungs.epochs == (4,)  # 4, then 12 > 9: one rung
    assert set(rungs.recorded[4]) == {f"t{i}" for i in range(5)}  # readings kept from every epoch
    decision = rungs.decide("new", 4, _curve(0.95, 4, 9))
    assert decision.rung == 1 and decision.promote


def test_extrapolation_ranks_by_predicted_final_values_not_by_readings():
    objectives = [("a", MAX)]
    plain = Rungs(objectives, 9, 3, 3)
    smart = Rungs(objectives, 9, 3, 3, extrapolate=True, min_completed=5)
    # finished trials: the full-budget value is the reading at 3 plus 6 times its last change
    for rungs in (plain, smart):
        for i, (at2, at3) in enumerate([(0.1, 0.2), (0.3, 0.35), (0.2, 0.4), (0.5, 0.5), (0.0, 0.3)]):
            rungs.record(f"f{i}", 2, (at2,))
            rungs.record(f"f{i}", 3, (at3,))
            rungs.record(f"f{i}", 9, (at3 + 6 * (at3 - at2),))
    for rungs in (plain, smart):  # the rung's records: the finished trials, then two new ones
        rungs.record("slow", 2, (0.55,))
        rungs.record("fast", 2, (0.0,))
        rungs.decide("slow", 3, (0.6,))
    # "fast" reads less at 3 (0.38, 4th of 7: only 3 go on) but climbs faster than any:
    # predicted 0.38 + 6 x 0.38, first
    assert not plain.decide("fast", 3, (0.38,)).promote
    verdict = smart.decide("fast", 3, (0.38,))
    assert verdict.promote and "predicted full-budget values" in verdict.reason
    assert smart.predict(3, ["fast", "slow"])[:, 0] == pytest.approx([0.38 + 6 * 0.38, 0.9])


# ---- the proxy screen ------------------------------------------------------------------------------

def test_the_proxy_scorer_is_deterministic_and_tells_architectures_apart():
    space = default_space().replace(resolution=16, num_classes=10, in_channels=1)
    scorer = ProxyScorer(TrialConfig(data="digits", resolution=16), 1, "naswot", batch_size=32)
    study = _study()
    archs = [sample_architecture(study.ask(), space) for _ in range(3)]
    scores = [scorer(a) for a in archs]
    assert [scorer(a) for a in archs] == scores  # the same weights and batch every time
    assert len(set(scores)) == 3 and all(math.isfinite(s) for s in scores)
    with pytest.raises(ValueError, match="unknown proxy"):
        ProxyScorer(TrialConfig(), 1, "nasbot")


def test_the_screen_proposes_the_best_scoring_candidate_and_the_searcher_keeps_its_scores(tmp_path):
    space = default_space().replace(resolution=16, num_classes=10, in_channels=1)
    scorer = ProxyScorer(TrialConfig(data="digits", resolution=16), 1, "naswot", batch_size=32)
    proposals = Proposals(space, [MAX, MAX], 3, multi_fidelity=False, scorer=scorer,
                          candidates=3, startup=2, seed=0)
    searcher = make_searcher(tmp_path, space, "random", proposals=proposals)
    for i in range(3):
        config = searcher.suggest(f"trial{i}")
        trial = searcher.study.trials[config["number"]]
        arch = sample_architecture(optuna.trial.FixedTrial(trial.params), space)
        if i < 2:  # screened: the best of 3 distinct candidates' naswot scores
            scores = trial.user_attrs["proxy_screened"]
            assert len(scores) == 3 and len(set(scores)) == 3
            assert trial.user_attrs["proxy_score"] == max(scores) == pytest.approx(scorer(arch))
        else:  # after the startup trials the study's own sampler proposes, unscreened
            assert "proxy_score" not in trial.user_attrs
    assert len(searcher.study.trials) == 3  # screened-out candidates never enter the study


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, values, field, words", [
    ("sampler", {"proxy": "nasbot"}, "sampler.proxy", "unknown proxy"),
    ("sampler", {"min_points": 1}, "sampler.min_points", ">= 2"),
    ("sampler", {"proxy_candidates": 0}, "sampler.proxy_candidates", ">= 1"),
    ("scheduler", {"name": "moasha", "placement": "clever"}, "scheduler.placement", "must be one of"),
    ("scheduler", {"name": "moasha", "rank_threshold": 2}, "scheduler.rank_threshold", "[-1, 1]"),
    ("scheduler", {"name": "asha", "extrapolate": True}, "scheduler.extrapolate", "moasha's options"),
])
def test_bad_smart_search_fields_are_named(tmp_path, section, values, field, words):
    base = tiny_config(tmp_path)
    with pytest.raises(ValueError) as err:
        merged = values if section == "scheduler" else {**base[section], **values}
        SearchConfig.from_dict({**base, section: merged})
    assert str(err.value).startswith(f"search.{field}: ") and words in str(err.value)


# ---- a real search with every part on -----------------------------------------------------------

def test_a_real_search_runs_with_every_smart_part_on(tmp_path):
    """Ray Tune, 2 trials at a time: multi-fidelity proposals, the naswot screen, adaptive and
    extrapolating MOASHA rungs, learning from the first finished trials (min 2)."""
    from nas.search import search

    config = SearchConfig.from_dict(tiny_config(
        tmp_path, num_trials=8,
        sampler={"name": "tpe", "seed": 0, "startup_trials": 2, "multi_fidelity": True,
                 "min_points": 2, "proxy": "naswot", "proxy_candidates": 2},
        scheduler={"name": "moasha", "grace_period": 1, "reduction_factor": 2,
                   "placement": "adaptive", "extrapolate": True, "min_completed": 2,
                   "rank_threshold": -1.0}))
    summary = search(config, run_dir=tmp_path / "run")
    run = records.read_run(tmp_path / "run")
    trained = [r for r in run.records if r["status"] != "rejected"]
    assert len(trained) == 8 and summary.counts["completed"] >= 2
    from nas.searcher import make_sampler
    from nas.study import load_study

    study = load_study(tmp_path / "run", config.name, make_sampler("random", 0, 1))
    screened = [t for t in study.trials if "proxy_screened" in t.user_attrs]
    assert len(screened) >= 4 and all(len(t.user_attrs["proxy_screened"]) == 2 for t in screened)
    enqueued = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(enqueued) >= len(screened)  # proposals reached the study
    decisions = [d for r in trained for d in r.get("rung_decisions") or ()]
    assert decisions
    assert any("predicted full-budget values" in d["reason"] for d in decisions), decisions
