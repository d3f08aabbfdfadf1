"""The layout study: the scaled layouts, the deformed large-data set, Kendall's tau-b, readings on
hand-made cells, config errors, the study end to end with real trials, killed and resumed, and the
two comparisons beside the layouts (distillation, ConViT against DeiT)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from scipy.stats import kendalltau

from evaluators.cost import count_cost
from evaluators.data import load_data
from evaluators.deformed_data import deformed_data
from evaluators.distillation import student_architecture
from nas.layout_study.cells import cell_training, comparison_cells, study_cells
from nas.layout_study.config import StudyConfig, StudyConfigError
from results.export import build
from results.layout_study.comparisons import comparison_readings, comparison_table
from results.layout_study.rankings import PAPER, kendall_tau_b, rankings, tau_against_paper
from results.layout_study.readings import cell_table, curves_table
from search_spaces.presets import LAYOUT_STUDY, get_preset, layout_study, vit_study
from servers import stop

TINY = {
    "name": "tiny", "data": "digits", "resolution": 16,
    "architectures": {"width_scale": 0.0625, "head_size": 4, "s1_stride": 1},
    "sizes": [{"per_class": 5, "steps": 12}, {"deformed_per_class": 30, "steps": 12}],
    "seeds": [0, 1], "evaluations": 3, "heldout_per_class": 10,
    "train": {"train_eval_images": 100}, "cheap": {"matched_losses": [1.0, 2.0], "steps": 8},
    "bootstrap": 200, "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
}


# ---- the five layouts ------------------------------------------------------------------------------

def test_layout_study_at_the_papers_scale_is_the_presets():
    for name, arch in layout_study().items():
        assert arch == get_preset(name), name


def test_scaled_layouts_are_matched_in_parameters_by_s3_depth_only():
    archs = layout_study(32, 1, 10, width_scale=0.125, head_size=8, s1_stride=1)
    assert list(archs) == list(LAYOUT_STUDY)
    reference = count_cost(archs["C-C-T-T"]).params
    for name, arch in archs.items():
        assert abs(count_cost(arch).params - reference) <= 0.05 * reference, name
    hybrids = [a for n, a in archs.items() if n != "ViT_REL"]
    for arch in hybrids:  # CoAtNet-0's S1, S2, S4 depths and the scaled widths
        assert [arch.stages[i].depth for i in (0, 1, 3)] == [2, 3, 2]
        assert [s.width for s in arch.stages] == [12, 24, 48, 96]
        assert arch.stage_resolutions() == [16, 8, 4, 2]
    vit = archs["ViT_REL"]
    assert vit.stem.patch_size == 8 and vit.stage_resolutions() == [4]  # S3's grid


# ---- the deformed large set --------------------------------------------------------------------------

def test_deformed_set_is_seeded_labelled_and_new():
    data = load_data("digits", 16)
    big = deformed_data(data, 40, seed=3)
    assert len(big.train_y) == 400 and torch.equal(torch.bincount(big.train_y), torch.full((10,), 40))
    assert torch.equal(big.val_x, data.val_x)  # validation untouched
    again = deformed_data(data, 40, seed=3)
    assert torch.equal(again.train_x, big.train_x)
    assert not torch.equal(deformed_data(data, 40, seed=4).train_x, big.train_x)
    # no deformed image is a copy of a training image
    distances = torch.cdist(big.train_x.flatten(1), data.train_x.flatten(1)).min(dim=1).values
    assert (distances > 1e-3).all()


# ---- rankings -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, y", [
    ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
    ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
    ([1, 1, 2, 3, 4], [1, 2, 2, 4, 3]),       # ties in both
    ([0.9, 0.8, 0.85, 0.3, 0.1], [5, 5, 3, 2, 1]),
])
def test_kendall_tau_b_matches_the_definition(x, y):
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)


def test_tau_b_by_hand_with_the_papers_tie():
    # paper: C-C-C-C ~ C-C-C-T > C-C-T-T > C-T-T-T > ViT_REL. Our perfect order has 9 concordant
    # pairs, the paper's tie is 1 of 10 pairs: tau-b = 9 / sqrt(10 * 9)
    perfect = {"C-C-C-C": 0.95, "C-C-C-T": 0.94, "C-C-T-T": 0.9, "C-T-T-T": 0.8, "ViT_REL": 0.5}
    assert tau_against_paper(perfect, "generalization") == pytest.approx(9 / math.sqrt(90))
    swapped = dict(perfect, **{"C-C-T-T": 0.7, "C-T-T-T": 0.9})  # one discordant pair
    assert tau_against_paper(swapped, "generalization") == pytest.approx(7 / math.sqrt(90))
    assert tau_against_paper({k: -v for k, v in perfect.items()}, "generalization") == \
        pytest.approx(-9 / math.sqrt(90))
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))


def hand_made_cells() -> list[dict]:
    """Two sizes x two seeds x the five layouts; every curve made so the readings are known."""
    cells = []
    quality = {"C-C-C-C": 0.9, "C-C-C-T": 0.85, "C-C-T-T": 0.8, "C-T-T-T": 0.7, "ViT_REL": 0.4}
    fit = {"C-C-T-T": 0.1, "C-T-T-T": 0.12, "ViT_REL": 0.3, "C-C-C-T": 0.5, "C-C-C-C": 0.6}
    for size, deformed in (("5/class", False), ("deformed 100/class", True)):
        for layout in LAYOUT_STUDY:
            for seed in (0, 1):
                lowest = fit[layout] if deformed else 0.01 * (1 + seed)
                losses = [2.0, 1.0, lowest]
                accs = [0.1, quality[layout] - 0.1, quality[layout] + 0.01 * seed]
                cells.append({
                    "cell_id": f"{layout}_{size}_{seed}", "layout": layout, "size": size,
                    "seed": seed, "deformed": deformed, "train_images": 1000 if deformed else 50,
                    "params": 1, "flops": 1, "steps": 30, "status": "completed",
                    "curve": [{"step": 10.0 * (i + 1), "train_loss": loss, "train_acc": 0.0,
                               "val_loss": loss + 0.5, "val_acc": acc}
                              for i, (loss, acc) in enumerate(zip(losses, accs))],
                    "heldout": {"loss": lowest + 0.01, "acc": 0.5} if deformed else None,
                    "wall_time_s": 1.0})
    return cells


def test_readings_and_rankings_of_hand_made_cells():
    cells = hand_made_cells()
    sizes = ["5/class", "deformed 100/class"]
    table = cell_table(cells, sizes, num_classes=10, fixed_levels=[0.5], short_steps=20)
    small = table[table["size"] == "5/class"]
    assert small["matched_level"].unique().tolist() == [0.02]  # the largest lowest loss
    # C-C-C-C seed 0 reaches 0.02 between 1.0 (acc 0.8) and 0.01 (acc 0.9)
    row = small[(small["layout"] == "C-C-C-C") & (small["seed"] == 0)].iloc[0]
    assert row["val_acc_at_matched_loss"] == pytest.approx(0.8 + (1.0 - 0.02) / 0.99 * 0.1)
    assert row["gap_at_matched_loss"] == pytest.approx(0.5)
    deformed = table[table["size"] == "deformed 100/class"]
    assert deformed.set_index("cell_id").loc["C-C-T-T_deformed 100/class_0", "capacity"] == \
        pytest.approx(math.exp(-0.1))
    ranks = rankings(table, curves_table(cells), sizes, resamples=100)
    assert ranks["generalization"]["order"] == list(LAYOUT_STUDY)  # C-C-C-C first ... ViT_REL last
    assert ranks["generalization"]["sizes"] == ["5/class"]  # generalization: the real sizes only
    assert ranks["generalization"]["tau_b"] == pytest.approx(9 / math.sqrt(90))
    assert ranks["capacity"]["size"] == "deformed 100/class"
    # capacity built to the paper's order, ties aside: C-C-T-T > C-T-T-T > ViT_REL > C-C-C-T > C-C-C-C
    assert ranks["capacity"]["tau_b"] == pytest.approx(9 / math.sqrt(90))
    low, high = ranks["capacity"]["interval_95"]
    assert low <= ranks["capacity"]["tau_b"] <= high
    assert [p["step"] for p in ranks["capacity"]["along_training"]] == [10, 20, 30]
    assert ranks["capacity"]["along_training"][-1]["tau_b"] == pytest.approx(ranks["capacity"]["tau_b"])
    cheap = ranks["cheap_readings"]
    assert cheap["fit_short"]["stands_for"] == "capacity"
    # level 0.5: every curve is read between 1.0 and its lowest, in the same order as at the
    # matched level, so it ranks exactly like the study's reading; nothing is missing
    assert cheap["val_acc_at_loss_0.5"]["tau_b_vs_validated"] == pytest.approx(1.0)
    assert cheap["val_acc_at_loss_0.5"]["missing"] == 0
    assert set(PAPER) == {"generalization", "capacity"}


# ---- config -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"sizes": [{"per_class": 5, "steps": 2}]}, "sizes[0].steps"),
    ({"sizes": [{"per_class": 5, "deformed_per_class": 9, "steps": 20}]}, "sizes[0]"),
    ({"sizes": [{"steps": 20}]}, "sizes[0]"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"architectures": {"layouts": ["C-C-X-T"]}}, "architectures.layouts"),
    ({"train": {"lr": -1}}, "train.lr"),
    ({"colour": "blue"}, "colour"),
    ({"distillation": {"layouts": ["C-X"]}}, "distillation.layouts"),
    ({"distillation": {"teacher": "ResNet"}}, "distillation.teacher"),
    ({"distillation": {"mode": "warm"}}, "distillation.mode"),
    ({"distillation": {"train": {"epochs": 3}}}, "distillation.train.epochs"),
    ({"distillation": {"train": {"mixup": -1}}}, "distillation.train.mixup"),
    ({"distillation": {"seeds": [2, 2]}}, "distillation.seeds"),
    ({"distillation": {"size": {"per_class": 5, "steps": 2}}}, "distillation.size.steps"),
    ({"distillation": {"teacher_size": {"per_class": "all", "steps": 1}}},
     "distillation.teacher_size.steps"),
    ({"distillation": {"teacher_size": {"per_class": 0, "steps": 20}}},
     "distillation.teacher_size.per_class"),
    ({"distillation": {"train": {"rand_augment": {"magnitude": 11}}}},
     "distillation.train.rand_augment.magnitude"),
    ({"distillation": {"teacher_train": {"mixup": 0.8}}}, "distillation.teacher_train"),
    ({"distillation": {"teacher_size": {"per_class": "all", "steps": 20},
                       "teacher_train": {"seed": 3}}}, "distillation.teacher_train.seed"),
    ({"distillation": {"teacher_size": {"per_class": "all", "steps": 20},
                       "teacher_train": {"repeated_augment": 0}}},
     "distillation.teacher_train.repeated_augment"),
    ({"convit": {"local_blocks": 6, "depth": 6}}, "convit.local_blocks"),
    ({"convit": {"width": 30, "head_size": 8}}, "convit.width"),
    ({"convit": {"patch_size": 5}}, "convit.patch_size"),
    ({"convit": {"sizes": [{"per_class": 5, "steps": 1}]}}, "convit.sizes[0].steps"),
    ({"convit": {"colour": 1}}, "convit.colour"),
])
def test_malformed_study_config_names_the_field(change, field):
    with pytest.raises(StudyConfigError) as err:
        StudyConfig.from_dict({**TINY, **change})
    assert f"study.{field}" in str(err.value)


def test_study_config_round_trips():
    config = StudyConfig.from_dict(TINY)
    assert StudyConfig.from_dict(config.to_dict()) == config
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config


# ---- end to end ------------------------------------------------------------------------------------

def study_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "study", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    stop(proc)
    proc.communicate(timeout=60)


def completed_cells(out: Path) -> dict[str, dict]:
    cells = {}
    for path in (out / "cells").glob("[!.]*.json"):
        record = json.loads(path.read_text())
        if record["status"] == "completed":
            cells[record["cell_id"]] = record
    return cells


@pytest.mark.slow
def test_tiny_study_end_to_end_killed_and_resumed(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "study"
    proc = study_cli(str(config), "--out", str(out))
    deadline = time.time() + 240
    while len(completed_cells(out)) < 6 if out.exists() else True:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline
        time.sleep(0.2)
    kill_group(proc)
    before = completed_cells(out)
    assert 6 <= len(before) < 20 and not (out / "rankings.json").exists()

    proc = study_cli("--resume", str(out))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    assert f"20 cells (5 layouts x 2 sizes x 2 seeds), {20 - len(before)} to train" in output
    after = completed_cells(out)
    assert len(after) == 20
    for cell_id, record in before.items():  # finished cells were not trained again
        assert after[cell_id]["started"] == record["started"]
        assert after[cell_id]["curve"] == record["curve"]

    table = pd.read_csv(out / "study.csv")
    assert len(table) == 20
    assert {"layout", "seed", "per_class", "size", "params", "flops", "val_acc_at_matched_loss",
            "gap_at_matched_loss", "capacity"} <= set(table.columns)
    assert table.groupby(["layout", "size"])["seed"].nunique().eq(2).all()
    assert table["val_acc_at_matched_loss"].notna().all()  # every run reaches the common level
    deformed = table[table["size"] == "deformed 30/class"]
    assert deformed["heldout_loss"].notna().all() and (deformed["train_images"] == 300).all()
    curves = pd.read_csv(out / "curves.csv")
    assert curves.groupby("cell_id").size().eq(3).all()  # three evaluations per run
    ranks = json.loads((out / "rankings.json").read_text())
    for reading in ("generalization", "capacity"):
        tau, (low, high) = ranks[reading]["tau_b"], ranks[reading]["interval_95"]
        assert -1 <= low <= high <= 1 and -1 <= tau <= 1
        assert set(ranks[reading]["order"]) == set(LAYOUT_STUDY)
    report = (out / "report.html").read_text()
    blocks = [json.loads(block) for block in
              re.findall(r"class='figure-data'[^>]*>(.*?)</script>", report, re.S)]
    figure2 = blocks[0]
    curves_drawn = [t for t in figure2["data"] if t.get("meta", {}).get("role") == "curve"]
    assert len(curves_drawn) == 20  # one line per cell
    assert "C-C-C-C ~ C-C-C-T &gt;= C-C-T-T" in report  # the paper's ranking beside ours


# ---- the comparisons beside the layouts ---------------------------------------------------------------

COMPARED = {
    **TINY,
    "distillation": {"size": {"per_class": 5, "steps": 12}, "layouts": ["ViT_REL", "DeiT"],
                     "evaluations": 2,
                     "train": {"augment": True, "mixup": 0.8, "cutmix": 1.0}},
    "convit": {"sizes": [{"per_class": 5, "steps": 12}, {"per_class": "all", "steps": 12}],
               "width": 16, "depth": 2, "local_blocks": 1, "head_size": 8, "patch_size": 4,
               "evaluations": 2},
}


def test_convit_and_deit_stacks_are_matched_in_parameters():
    for kwargs in ({}, {"resolution": 32, "in_channels": 1, "num_classes": 10, "width": 32,
                        "depth": 6, "local_blocks": 5, "head_size": 8, "patch_size": 4}):
        stacks = vit_study(**kwargs)
        deit, convit = count_cost(stacks["DeiT"]).params, count_cost(stacks["ConViT"]).params
        assert abs(deit - convit) <= 0.01 * deit
        assert stacks["DeiT"].layout == "A" and stacks["ConViT"].layout == "G-A"
        assert [s.depth for s in stacks["ConViT"].stages] == \
            ([10, 2] if not kwargs else [5, 1])
        assert not stacks["ConViT"].stages[1].qkv_bias and stacks["DeiT"].stages[0].qkv_bias
        assert stacks["DeiT"].stem == stacks["ConViT"].stem


def test_comparison_cells_and_their_teachers():
    config = StudyConfig.from_dict(COMPARED)
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    cells = comparison_cells(config, num_classes=10, in_channels=1)
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids)) == 2 * 5 + 2 * 2 * 2  # per seed: 3 plain + 2 distilled; convit
    distilled = [c for c in cells if c.arm == "distilled"]
    assert [c.cell_id for c in distilled] == [
        "distill_ViT_REL_5pc_s0_distilled", "distill_DeiT_5pc_s0_distilled",
        "distill_ViT_REL_5pc_s1_distilled", "distill_DeiT_5pc_s1_distilled"]
    # the DeiT-style stack is a class-token student: it distils through DeiT's distillation token
    deit = next(c for c in distilled if c.layout == "DeiT")
    assert deit.architecture.head == "token" and student_architecture(deit.architecture).distill_token
    assert deit.architecture == next(c for c in cells if c.layout == "DeiT"
                                     and c.comparison == "convit").architecture
    for cell in distilled:  # its teacher: the plain C-C-C-C run of the same seed, which exists
        assert cell.teacher_cell == f"distill_C-C-C-C_5pc_s{cell.seed}_plain" and cell.teacher_cell in ids
    train, evaluations = cell_training(config, {**distilled[0].to_dict(), "teacher_config": __file__})
    assert evaluations == 2 and train.mixup == 0.8 and train.augment
    # the study's warmup share of the steps: 1 of its 3 epochs, so 2/3 of one of these 2 epochs
    assert train.warmup_epochs == pytest.approx(config.train.warmup_epochs * 2 / 3)
    assert train.distill.teacher == __file__ and train.distill.mode == "hard"
    plain, _ = cell_training(config, cells[0].to_dict())
    assert plain.distill is None and plain.mixup == 0.8
    layout_cell = study_cells(config, {"C-C-C-C": cells[0].architecture})[0]
    layouts_train, evaluations = cell_training(config, layout_cell.to_dict())
    assert layouts_train == config.train and evaluations == 3  # the layouts keep the study's recipe


def test_a_teacher_trained_at_its_own_size_teaches_every_seed():
    config = StudyConfig.from_dict({**COMPARED, "distillation": {
        **COMPARED["distillation"], "teacher_size": {"per_class": "all", "steps": 20}}})
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict()))) == config
    cells = [c for c in comparison_cells(config, num_classes=10, in_channels=1)
             if c.comparison == "distillation"]
    ids = [c.cell_id for c in cells]
    assert len(ids) == len(set(ids)) == 2 * 6  # per seed: the teacher, 3 plain at 5/class, 2 distilled
    teachers = [c for c in cells if c.teaches]
    assert [c.cell_id for c in teachers] == ["distill_C-C-C-C_all_s0_plain", "distill_C-C-C-C_all_s1_plain"]
    assert all(c.size.per_class is None and c.size.steps == 20 for c in teachers)
    # the convnet also trains at the students' size, as a reference, but teaches nothing
    reference = next(c for c in cells if c.cell_id == "distill_C-C-C-C_5pc_s0_plain")
    assert not reference.teaches and reference.to_dict()["teaches"] is False
    for cell in (c for c in cells if c.arm == "distilled"):
        assert cell.teacher_cell == f"distill_C-C-C-C_all_s{cell.seed}_plain" and cell.size.per_class == 5
    # the teacher's run trains with teacher_train when given, every student with train
    assert cell_training(config, teachers[0].to_dict())[0].rand_augment is None
    own = StudyConfig.from_dict({**COMPARED, "distillation": {
        **COMPARED["distillation"], "teacher_size": {"per_class": "all", "steps": 20},
        "train": {"rand_augment": {"ops": 1}, "repeated_augment": 2}, "teacher_train": {"mixup": 0.5}}})
    assert StudyConfig.from_dict(yaml.safe_load(yaml.safe_dump(own.to_dict()))) == own
    recipes = {c.cell_id: cell_training(own, c.to_dict())[0]
               for c in comparison_cells(own, num_classes=10, in_channels=1)
               if c.comparison == "distillation" and c.arm == "plain"}
    teacher_recipe = recipes.pop("distill_C-C-C-C_all_s0_plain")
    assert teacher_recipe.mixup == 0.5 and teacher_recipe.rand_augment is None
    assert teacher_recipe.repeated_augment == 1
    for cell_id, recipe in recipes.items():
        if "_all_" not in cell_id:
            assert recipe.rand_augment.ops == 1 and recipe.repeated_augment == 2, cell_id
    # without teacher_size the teacher is the plain C-C-C-C run at the students' size
    same = comparison_cells(StudyConfig.from_dict(COMPARED), num_classes=10, in_channels=1)
    assert [c.cell_id for c in same if c.teaches] == ["distill_C-C-C-C_5pc_s0_plain",
                                                       "distill_C-C-C-C_5pc_s1_plain"]


def comparison_records() -> list[dict]:
    """Distillation: a C-C-C-C teacher and a ViT_REL student, 3 seeds; ConViT at two sizes."""
    teacher_predictions = [0, 1, 2, 3, 4, 5, 6, 7]
    records = []

    def record(cell_id, layout, size, seed, val_acc, comparison, arm=None, teacher=None, predictions=None):
        records.append({"cell_id": cell_id, "layout": layout, "size": size, "seed": seed,
                        "comparison": comparison, "arm": arm, "teacher_cell": teacher,
                        "status": "completed", "train_images": 50, "params": 1, "flops": 1,
                        "steps": 10, "wall_time_s": 1.0,
                        "curve": [{"step": 10.0, "train_loss": 0.1, "train_acc": 1.0, "val_loss": 1.0,
                                   "val_acc": val_acc}],
                        **({"val_predictions": ",".join(map(str, predictions))} if predictions else {})})

    for seed in (0, 1, 2):
        teacher = f"t{seed}"
        record(teacher, "C-C-C-C", "5/class", seed, 0.8, "distillation", "plain",
               predictions=teacher_predictions)
        # plain: agrees on 4 of 8 images; distilled: on 6 + seed // 2
        agree = 6 + seed // 2
        record(f"p{seed}", "ViT_REL", "5/class", seed, 0.5 + 0.01 * seed, "distillation", "plain",
               predictions=teacher_predictions[:4] + [9] * 4)
        record(f"d{seed}", "ViT_REL", "5/class", seed, 0.6 + 0.01 * seed, "distillation", "distilled",
               teacher=teacher, predictions=teacher_predictions[:agree] + [9] * (8 - agree))
        for size, deit, convit in (("5/class", 0.3, 0.5), ("all", 0.9, 0.92)):
            record(f"deit{size}{seed}", "DeiT", size, seed, deit + 0.01 * seed, "convit")
            record(f"convit{size}{seed}", "ConViT", size, seed, convit + 0.02 * seed, "convit")
    return records


def test_comparison_readings_of_hand_made_cells():
    table = comparison_table(comparison_records())
    rows = table.set_index("cell_id")
    assert rows.loc["p0", "teacher_agreement"] == 0.5 and rows.loc["d0", "teacher_agreement"] == 0.75
    assert rows.loc["d2", "teacher_agreement"] == 7 / 8 and rows.loc["t1", "teacher_agreement"] == 1.0
    assert math.isnan(rows.loc["deit5/class0", "teacher_agreement"])
    readings = comparison_readings(table, "C-C-C-C", ["5/class", "all"], resamples=500)
    student = readings["distillation"]["layouts"]["ViT_REL"]
    assert list(readings["distillation"]["layouts"]) == ["ViT_REL"]  # the teacher is not a student
    assert student["val_acc"]["plain"]["mean"] == pytest.approx(0.51)
    assert student["val_acc"]["difference"]["mean"] == pytest.approx(0.1)  # paired by seed
    assert student["val_acc"]["difference"]["interval_95"] == pytest.approx([0.1, 0.1])
    assert student["val_acc"]["verdict"] == "higher"
    agreement = student["teacher_agreement"]
    assert agreement["difference"]["mean"] == pytest.approx((0.25 + 0.25 + 0.375) / 3)
    low, high = agreement["difference"]["interval_95"]
    assert 0.25 <= low <= agreement["difference"]["mean"] <= high <= 0.375
    assert student["gap_to_teacher"]["plain"]["mean"] == pytest.approx(0.29)
    assert student["gap_to_teacher"]["distilled"]["mean"] == pytest.approx(0.19)
    convit = readings["convit"]
    assert convit["per_size"]["5/class"]["difference"]["mean"] == pytest.approx(0.21)
    assert convit["per_size"]["all"]["difference"]["mean"] == pytest.approx(0.03)
    assert convit["convit_ahead_at_smallest"] and convit["difference_shrinks"]


def test_readings_with_a_teacher_trained_on_more_data_than_its_students():
    records = comparison_records()
    for r in records:
        if r["cell_id"].startswith("t"):  # the teachers trained on every image
            r["size"], r["curve"][0]["val_acc"] = "all", 0.95
        if r["cell_id"].startswith("d"):  # what the teacher said beside the labels
            r["curve"][0]["teacher_relabelled"] = 0.1 + 0.05 * r["seed"]
    for seed in (0, 1, 2):  # the convnet at the students' size: a reference, not a teacher
        records.append({**records[0], "cell_id": f"ref{seed}", "size": "5/class", "seed": seed,
                        "curve": [{**records[0]["curve"][0], "val_acc": 0.7}],
                        "val_predictions": "0,1,2,3,9,9,9,9"})
    table = comparison_table(records)
    assert table.set_index("cell_id").loc["ref1", "teacher_agreement"] == 0.5  # against t1
    d = comparison_readings(table, "C-C-C-C", None, resamples=500)["distillation"]
    assert d["sizes"] == ["5/class"] and d["teacher_sizes"] == ["all"]
    assert d["teacher_val_acc"]["mean"] == pytest.approx(0.95)  # the teachers', not the reference's
    assert list(d["layouts"]) == ["ViT_REL"]
    student = d["layouts"]["ViT_REL"]
    assert student["gap_to_teacher"]["plain"]["mean"] == pytest.approx(0.95 - 0.51)
    assert student["teacher_relabelled"]["mean"] == pytest.approx(0.15)
    assert student["teacher_agreement"]["difference"]["mean"] == pytest.approx((0.25 + 0.25 + 0.375) / 3)


def test_a_distilled_cell_whose_teacher_did_not_complete_is_recorded_failed(tmp_path):
    from nas.layout_study.runner import _with_teacher
    from results.layout_study.study_directory import StudyDirectory

    config = StudyConfig.from_dict(COMPARED)
    study = StudyDirectory(tmp_path)
    study.write_config(config.to_dict())
    cell = next(c for c in comparison_cells(config, 10, 1) if c.arm == "distilled")
    costs = {cell.layout: {"params": 1, "flops": 1}}
    assert _with_teacher(study, cell, costs) is None
    record = study.read_cell(cell.cell_id)
    assert record["status"] == "failed" and cell.teacher_cell in record["error"]
    assert record["comparison"] == "distillation" and record["arm"] == "distilled"


@pytest.mark.slow
def test_tiny_study_with_both_comparisons_end_to_end(tmp_path):
    # the teacher trained on every digit with its own recipe, its students on 5/class with
    # DeiT's whole one
    config = tmp_path / "compared.yaml"
    students = {**COMPARED["distillation"]["train"], "rand_augment": {"ops": 2},
                "repeated_augment": 2}
    config.write_text(yaml.safe_dump({**COMPARED, "distillation": {
        **COMPARED["distillation"], "teacher_size": {"per_class": "all", "steps": 12},
        "train": students, "teacher_train": COMPARED["distillation"]["train"]}}))
    out = tmp_path / "study"
    proc = study_cli(str(config), "--out", str(out))
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output
    assert "40 cells (5 layouts x 2 sizes x 2 seeds, 20 in the comparisons), 40 to train" in output
    compared = pd.read_csv(out / "comparisons.csv")
    assert len(compared) == 20 and (compared["status"] == "completed").all()
    assert len(pd.read_csv(out / "study.csv")) == 20  # the layouts' readings: their cells only
    data = load_data("digits", 16)
    for seed in (0, 1):
        teacher_id = f"distill_C-C-C-C_all_s{seed}_plain"
        assert compared.set_index("cell_id").loc[teacher_id, "train_images"] > 1000
        # the teacher the driver saved is an exported config that `build` rebuilds: its
        # predictions are the ones its run recorded
        teacher = build(out / "teachers" / f"{teacher_id}.yaml").eval()
        with torch.no_grad():
            predicted = teacher(data.val_x).argmax(1).tolist()
        recorded = json.loads((out / "cells" / f"{teacher_id}.json").read_text())["val_predictions"]
        assert predicted == [int(v) for v in recorded.split(",")]
        # the distilled run's own agreement reading (trainer, against the loaded teacher) is the
        # one the study computes from the two runs' recorded predictions
        for layout in ("ViT_REL", "DeiT"):
            student = json.loads(
                (out / "cells" / f"distill_{layout}_5pc_s{seed}_distilled.json").read_text())
            row = compared.set_index("cell_id").loc[student["cell_id"]]
            assert student["curve"][-1]["teacher_agreement"] == pytest.approx(row["teacher_agreement"])
            assert row["teacher_cell"] == teacher_id
            assert 0 <= row["teacher_relabelled"] <= 1
            assert row["teacher_relabelled"] == student["curve"][-1]["teacher_relabelled"]
    ranks = json.loads((out / "rankings.json").read_text())
    assert set(ranks["distillation"]["layouts"]) == {"ViT_REL", "DeiT"}
    assert ranks["distillation"]["sizes"] == ["5/class"] and ranks["distillation"]["teacher_sizes"] == ["all"]
    assert list(ranks["convit"]["per_size"]) == ["5/class", "all"]
    assert ranks["distillation"]["recipe"]["rand_augment"]["ops"] == 2
    assert ranks["distillation"]["recipe"]["repeated_augment"] == 2
    assert ranks["distillation"]["teacher_recipe"] == COMPARED["distillation"]["train"]
    report = (out / "report.html").read_text()
    assert "Distillation from a C-C-C-C teacher" in report and "ConViT- against DeiT-style" in report
    assert "The teacher's own recipe: augment True, cutmix 1.0, mixup 0.8." in report
    roles = {t.get("meta", {}).get("role") for block in
             re.findall(r"class='figure-data'[^>]*>(.*?)</script>", report, re.S)
             for t in json.loads(block)["data"]}
    assert {"distillation", "convit"} <= roles
