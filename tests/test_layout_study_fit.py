"""The layout study's fit protocol: runs trained to a training-loss target (stopping there, or
recorded with the loss they reached at the cap), the hard large-data regime, the built-in fit
config, the agreement of a search trial's readings with the study's, and Figure 2 of two
protocols side by side."""

from __future__ import annotations

import json
import math
import re

import pandas as pd
import pytest
import torch
import yaml

from evaluators.data import DataError, load_data
from evaluators.deformed_data import Deformation, deformed_data
from nas.layout_study.config import StudyConfig, StudyConfigError, load_study_config
from results.layout_study.objective_agreement import agreement_table, best_readings
from results.layout_study.rankings import PAPER, kendall_tau_b
from results.layout_study.readings import cell_table, curves_table
from results.layout_study.report import ProtocolCurves, render_study_report
from results.layout_study.rankings import rankings
from search_spaces.presets import LAYOUT_STUDY
from test_layout_study import TINY, study_cli


# ---- the built-in fit protocol ---------------------------------------------------------------------

def test_fit_protocol_loads_and_is_the_protocol_the_issue_asks_for():
    fit, quick = load_study_config(protocol="fit"), load_study_config(quick=True)
    real = [s for s in fit.sizes if not s.deformed]
    deformed = [s for s in fit.sizes if s.deformed]
    assert len(real) >= 3 and all(s.target_loss is not None for s in real)
    assert len(fit.seeds) >= 5 and fit.architectures == quick.architectures
    assert (fit.data, fit.resolution, fit.val_fraction, fit.data_seed) == \
        (quick.data, quick.resolution, quick.val_fraction, quick.data_seed)  # same validation digits
    assert deformed and all(s.target_loss is None for s in deformed)  # capacity: the whole budget
    quick_budget = max(s.steps for s in quick.sizes if s.deformed)
    assert min(s.steps for s in deformed) >= 10 * quick_budget
    assert fit.deformation.clutter > 0  # the hard regime, not the quick protocol's
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(fit.to_dict()))) == fit
    with pytest.raises(StudyConfigError, match="study.protocol"):
        load_study_config(protocol="slow")


@pytest.mark.parametrize("change, field", [
    ({"sizes": [{"per_class": 5, "steps": 20, "target_loss": 0}]}, "sizes[0].target_loss"),
    ({"sizes": [{"per_class": 5, "steps": 20, "target_loss": "low"}]}, "sizes[0].target_loss"),
    ({"deformation": {"clutter": -1}}, "deformation.clutter"),
    ({"deformation": {"clutter_size": 1.5}}, "deformation.clutter_size"),
    ({"deformation": {"scale": 1.0}}, "deformation.scale"),
    ({"deformation": {"blur": 1}}, "deformation.blur"),
])
def test_malformed_fit_fields_name_the_field(change, field):
    with pytest.raises(StudyConfigError) as err:
        StudyConfig.from_dict({**TINY, **change})
    assert f"study.{field}" in str(err.value)


# ---- the hard large-data regime ---------------------------------------------------------------------

def test_cluttered_deformations_are_seeded_on_range_and_add_other_digits():
    data = load_data("digits", 16)
    hard = Deformation(clutter=2, clutter_size=0.5, noise=0.1)
    first = deformed_data(data, 20, seed=3, deformation=hard)
    assert torch.equal(first.train.images(), deformed_data(data, 20, seed=3, deformation=hard)
                       .train.images())
    plain = deformed_data(data, 20, seed=3).train.images()
    pixels = first.train.images()
    assert pixels.min() >= 0 and pixels.max() <= 1
    # the affine draws come first from the same seeded stream: the clutter only ever adds ink
    # (pixel-wise maximum) before the noise; without noise it never darkens a pixel
    no_noise = deformed_data(data, 20, seed=3, deformation=Deformation(clutter=2, clutter_size=0.5))
    assert (no_noise.train.images() >= plain - 1e-6).all()
    assert no_noise.train.images().mean() > plain.mean() + 0.01
    assert torch.equal(first.train_y, deformed_data(data, 20, seed=3).train_y)  # labels kept
    with pytest.raises(DataError, match="deformation.noise"):
        Deformation(noise=-0.1)


# ---- training to a target, end to end ---------------------------------------------------------------

FIT_TINY = {**TINY, "sizes": [{"per_class": 5, "steps": 60, "target_loss": 2.2},
                              {"per_class": 10, "steps": 12, "target_loss": 1e-4}],
            "seeds": [0], "evaluations": 6, "cheap": {"matched_losses": [2.25, 2.2], "steps": 10}}


@pytest.mark.slow
def test_runs_stop_at_their_target_or_are_kept_with_the_loss_they_reached(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text(yaml.safe_dump(FIT_TINY))
    out = tmp_path / "study"
    proc = study_cli(str(config), "--out", str(out))
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    records = {r["cell_id"]: r for r in (json.loads(p.read_text())
                                         for p in (out / "cells").glob("*.json"))}
    assert len(records) == 10 and all(r["status"] == "completed" for r in records.values())
    reachable = [r for r in records.values() if r["size"] == "5/class"]
    stopped_early = 0
    for record in reachable:
        losses = [p["train_loss"] for p in record["curve"]]
        if record["reached_target"]:
            # it stopped at the first measurement at or below the target, not later
            assert losses[-1] <= 2.2 and all(loss > 2.2 for loss in losses[:-1])
            stopped_early += record["curve"][-1]["step"] < 60
        else:
            assert record["curve"][-1]["step"] == 60 and min(losses) > 2.2
    assert stopped_early >= 3  # most tiny layouts get below 2.2 well within 60 steps
    table = pd.read_csv(out / "study.csv")
    unreachable = table[table["size"] == "10/class"]
    assert len(unreachable) == 5 and (unreachable["status"] == "completed").all()
    assert (~unreachable["reached_target"].astype(bool)).all()
    assert (unreachable["steps_trained"] == 12).all()  # the whole cap
    for row in unreachable.itertuples():  # recorded with the loss it reached, no reading at target
        assert row.final_train_loss == pytest.approx(records[row.cell_id]["curve"][-1]["train_loss"])
        assert math.isnan(row.val_acc_at_matched_loss)
    reached = table[(table["size"] == "5/class") & table["reached_target"].astype(bool)]
    assert (reached["matched_level"] == 2.2).all() and reached["val_acc_at_matched_loss"].notna().all()
    ranks = json.loads((out / "rankings.json").read_text())
    missed = {m["cell_id"] for m in ranks["generalization"]["not_reached"]}
    assert set(unreachable["cell_id"]) <= missed
    assert ranks["generalization"]["missing"] >= 5
    assert [p["level"] for p in ranks["generalization"]["along_loss"]] == [2.25, 2.2]
    agreement = {(r["reading"], r["stands_for"]) for r in ranks["objective_agreement"]}
    assert {("fit_short", "capacity"), ("gap_short", "generalization"),
            ("proxy_naswot", "generalization"), ("short_val_acc_at_loss_2.2", "generalization")} \
        <= agreement
    report = (out / "report.html").read_text()
    assert "did not reach their target" in report and "Which readings a search trial" in report


# ---- which readings a search trial can take agree with the study ------------------------------------

def agreement_cells() -> pd.DataFrame:
    """Five layouts x two seeds at one real size and the large size; hand-made candidate values."""
    rows = []
    good = {"C-C-C-C": 5, "C-C-C-T": 4, "C-C-T-T": 3, "C-T-T-T": 2, "ViT_REL": 1}
    swapped = {**good, "C-C-T-T": 2, "C-T-T-T": 3}
    for layout in LAYOUT_STUDY:
        for seed in (0, 1):
            for size in ("5/class", "deformed"):
                rows.append({
                    "layout": layout, "seed": seed, "size": size, "status": "completed",
                    "val_acc_short": swapped[layout] + 0.1 * seed,   # one pair swapped
                    "gap_short": good[layout],                        # lower is better: reversed
                    "gap_acc_short": 1.0 if layout in ("C-C-C-C", "C-C-C-T") else 2.0,  # ties
                    "short_val_acc_at_loss_0.5": (math.nan if layout == "ViT_REL" else good[layout]),
                    "fit_short": -good[layout],
                    "proxy_naswot": 1.0,                               # all tied: no tau
                    "proxy_synflow": good[layout]})                    # agrees, but no objective
    return pd.DataFrame(rows)


def test_objective_agreement_of_hand_made_readings_with_ties():
    table = agreement_cells()
    validated = {"generalization": {"C-C-C-C": 0.9, "C-C-C-T": 0.8, "C-C-T-T": 0.7,
                                    "C-T-T-T": 0.6, "ViT_REL": 0.5},
                 "capacity": {"C-C-C-C": 0.1, "C-C-C-T": 0.2, "C-C-T-T": 0.3,
                              "C-T-T-T": 0.4, "ViT_REL": 0.5}}
    rows = agreement_table(table, validated, ["5/class"], "deformed")
    by = {(r["reading"], r["stands_for"]): r for r in rows}
    assert by[("val_acc_short", "generalization")]["tau_b_vs_validated"] == pytest.approx(0.8)
    # a gap is better small: larger gaps for worse layouts make it agree, not disagree
    assert by[("gap_short", "generalization")]["higher_is_better"] is False
    assert by[("gap_short", "generalization")]["tau_b_vs_validated"] == pytest.approx(-1.0)
    # two groups tied in the candidate: 6 concordant, 0 discordant, 4 tied pairs of 10
    ties = kendall_tau_b([-1, -1, -2, -2, -2], [5, 4, 3, 2, 1])
    assert ties == pytest.approx(6 / math.sqrt(6 * 10))
    assert by[("gap_acc_short", "generalization")]["tau_b_vs_validated"] == pytest.approx(ties)
    # ViT_REL never reaches the level within the budget: counted, and left out of its tau
    level = by[("short_val_acc_at_loss_0.5", "generalization")]
    assert level["missing"] == 2 and level["tau_b_vs_validated"] == pytest.approx(1.0)
    assert by[("fit_short", "capacity")]["sizes"] == ["deformed"]
    assert by[("fit_short", "capacity")]["tau_b_vs_validated"] == pytest.approx(1.0)
    assert math.isnan(by[("proxy_naswot", "generalization")]["tau_b_vs_validated"])
    paper = PAPER["generalization"].rank
    assert by[("val_acc_short", "generalization")]["tau_b_vs_paper"] == pytest.approx(
        kendall_tau_b([5, 4, 2, 3, 1], [-paper[k] for k in LAYOUT_STUDY]))
    # the proxy agrees exactly and ranks first, but a proxy is known before training: the best
    # objective is the exact trial reading (its two missing values counted, not hidden)
    proxy = by[("proxy_synflow", "generalization")]
    assert proxy["tau_b_vs_validated"] == pytest.approx(1.0) and proxy["objective"] is False
    assert rows[0]["reading"] == "proxy_synflow"
    assert best_readings(rows) == {"generalization": "short_val_acc_at_loss_0.5",
                                   "capacity": "fit_short"}
    assert [r["stands_for"] for r in rows] == sorted((r["stands_for"] for r in rows),
                                                     key=["generalization", "capacity"].index)


# ---- Figure 2 of two protocols side by side -----------------------------------------------------------

def test_report_draws_figure2_of_another_protocol_beside(tmp_path):
    from test_layout_study import hand_made_cells
    cells = hand_made_cells()
    sizes = ["5/class", "deformed 100/class"]
    table = cell_table(cells, sizes, 10, [0.5], 20, {"5/class": 0.05})
    curves = curves_table(cells)
    assert (table.loc[table["size"] == "5/class", "matched_level"] == 0.05).all()
    folder = tmp_path / "quick"
    folder.mkdir()
    table.to_csv(folder / "study.csv", index=False)
    curves.to_csv(folder / "curves.csv", index=False)
    (folder / "study.yaml").write_text(yaml.safe_dump({"name": "the-quick-one"}))
    beside = ProtocolCurves.read(folder)
    assert beside.name == "the-quick-one" and list(beside.sizes) == sizes
    ranks = rankings(table, curves, sizes, resamples=20)
    report = render_study_report("fit", table, curves, ranks, sizes, "", None, beside)
    figure2 = json.loads(re.findall(r"class='figure-data'[^>]*>(.*?)</script>", report, re.S)[0])
    drawn = [t["meta"]["protocol"] for t in figure2["data"] if t.get("meta", {}).get("role") == "curve"]
    assert drawn.count("fit") == len(cells) and drawn.count("the-quick-one") == len(cells)
    with pytest.raises(FileNotFoundError, match="curves.csv"):
        (folder / "curves.csv").unlink() or ProtocolCurves.read(folder)
