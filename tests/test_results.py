"""Results: table, report figures and HTML, export/build, show, and clear errors on bad run folders.

Most tests read a run directory written by tests/run_factory.py in the documented record format
(real architectures, real cost; synthetic training metrics). `test_report_of_a_real_search` reports
on a real tiny search.
"""

import base64
import importlib.util
import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import plotly.offline
import pandas as pd
import pytest
import torch
import yaml

from results.run_directory import RunDirectory
from evaluators.data import load_data
from isolated_python import onnx_alone, pt2_alone
from nas.cli import main
from results.export import build, export_architectures
from results.figures import build_figures
from results.pareto import pareto_ranks
from results.report import write_report
from results.run_directory import RunDirError, UnreadableRecordWarning
from results.table import load_table, save_table
from run_factory import (OBJECTIVES, SEED, make_record, sample_architectures, write_record,
                         write_run)
from search_spaces.architecture import Architecture


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run: 12 records, one of each non-completed status, weights for one trial."""
    run_dir = tmp_path_factory.mktemp("results") / "run"
    records = write_run(run_dir, n_trials=12, seed=SEED)
    return run_dir, {r["trial_id"]: r for r in records}


def completed(records: dict) -> dict:
    return {k: r for k, r in records.items() if r["status"] == "completed"}


def expected_front(records: dict) -> set[str]:
    """The Pareto front computed here from the raw records, independently of the table."""
    done = completed(records)
    ids = list(done)
    values = np.array([[done[i]["objectives"]["gap"], done[i]["objectives"]["fit_full"]] for i in ids])
    ranks = pareto_ranks(values, ["min", "max"])
    return {i for i, r in zip(ids, ranks) if r == 0}


# ---- table -----------------------------------------------------------------------------------

def test_table_has_one_row_per_trial_with_choices_cost_and_metrics(run):
    run_dir, records = run
    table = load_table(run_dir)
    assert len(table) == len(records)
    assert table["number"].tolist() == sorted(r["number"] for r in records.values())
    for row in table.itertuples(index=False):
        record = records[row.trial_id]
        arch = Architecture.from_dict(record["architecture"])
        assert row.status == record["status"]
        assert row.arch_id == arch.arch_id and row.layout == arch.layout
        assert row.params == record["cost"]["params"] and row.flops == record["cost"]["flops"]
        assert row.resolution == arch.resolution and row.stem_width == arch.stem.width
        assert row.stem_kind == arch.stem.kind
        for i, stage in enumerate(arch.stages, start=1):
            for field in ("block", "depth", "width", "head_size", "expansion"):
                assert getattr(row, f"s{i}_{field}") == getattr(stage, field)
        for name, value in record["metrics"].items():
            column = "metric_wall_time_s" if name == "wall_time_s" else name
            assert getattr(row, column) == pytest.approx(value, nan_ok=True)
        for name, value in record["objectives"].items():
            assert getattr(row, f"obj_{name}") == pytest.approx(value)
    rejected = table[table["status"] == "rejected"]
    assert rejected["rejection"].str.contains("max_flops").all()
    assert table.loc[table["status"] == "failed", "error"].str.contains("boom").all()
    assert set(table["status"]) == {"completed", "pruned", "failed", "diverged", "rejected"}


def test_table_ranks_only_completed_trials(run):
    run_dir, records = run
    table = load_table(run_dir)
    ranked = table[table["pareto_rank"].notna()]
    assert set(ranked["trial_id"]) == set(completed(records))
    assert set(table.loc[table["pareto_rank"] == 0, "trial_id"]) == expected_front(records)
    # the pruned trial reported unbeatable objectives; it must not be on (or push) the front
    assert table.loc[table["status"] == "pruned", "pareto_rank"].isna().all()


def test_save_table_round_trips_through_parquet_and_csv(run, tmp_path):
    run_dir, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    parquet, csv = save_table(copy)
    assert parquet == copy / "table.parquet" and csv == copy / "table.csv"
    table = load_table(copy)
    for loaded in (pd.read_parquet(parquet), pd.read_csv(csv)):
        assert loaded["trial_id"].tolist() == table["trial_id"].tolist()
        np.testing.assert_allclose(loaded["val_acc"].to_numpy(float), table["val_acc"].to_numpy(float))
        assert loaded["layout"].tolist() == table["layout"].tolist()


def test_a_running_run_loads_and_reports(tmp_path):
    run_dir = tmp_path / "live"
    write_run(run_dir, n_trials=5, seed=SEED, finished=False,
              statuses=("completed", "running", "completed", "running", "completed"), weights_for=0)
    table = load_table(run_dir)
    assert table.attrs["summary"] is None
    assert (table["status"] == "running").sum() == 2
    out = write_report(run_dir)
    assert "still running or interrupted" in out.read_text()


def test_one_corrupt_record_is_skipped_with_a_warning_naming_it(run, tmp_path):
    run_dir, records = run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    victim = copy / "trials" / f"{next(iter(records))}.json"
    victim.write_text(victim.read_text()[:57])  # truncated mid-write
    with pytest.warns(UnreadableRecordWarning, match=re.escape(victim.name)):
        table = load_table(copy)
    assert len(table) == len(records) - 1
    assert table.attrs["unreadable"][0][0] == str(victim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = write_report(copy).read_text()
    assert "1 unreadable trial records skipped" in html and victim.name in html


# ---- clear errors on bad folders (CLI exit code 2 and a message naming the path) ------------

def test_a_corrupt_run_directory_is_a_clear_cli_error(tmp_path, capsys):
    run_dir = tmp_path / "corrupt"
    arch = sample_architectures(1, seed=SEED)[0]
    write_run(run_dir, n_trials=0)
    path = write_record(run_dir, make_record(arch, 0, "completed", np.random.default_rng(0)))
    path.write_text(path.read_text()[:100])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for command in ("report", "show"):
            assert main([command, str(run_dir)]) == 2
            err = capsys.readouterr().err
            assert f"hybrid-nas {command}: error: {path}" in err and "corrupt JSON" in err
            assert "Traceback" not in err
        with pytest.raises(RunDirError):
            load_table(run_dir)
    (run_dir / "search.yaml").write_text("objectives: [unclosed\n")
    assert main(["report", str(run_dir)]) == 2
    assert "search.yaml: not valid YAML" in capsys.readouterr().err


def test_a_foreign_or_missing_directory_is_a_clear_cli_error(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.json").write_text("{}")
    assert main(["report", str(tmp_path / "photos")]) == 2
    err = capsys.readouterr().err
    assert "not a hybrid-nas run directory" in err and str(tmp_path / "photos") in err
    for command in (["show"], ["export", "--pareto"]):
        assert main([command[0], str(tmp_path / "nowhere"), *command[1:]]) == 2
        assert "no such run directory" in capsys.readouterr().err


# ---- report ----------------------------------------------------------------------------------

def array(data) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array {dtype, bdata (base64), shape}."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
    return np.asarray(data)


def trial_points(fig_json: dict) -> dict[str, list[str]]:
    """trial_ids plotted per panel, from the traces marked role=trials."""
    panels: dict[str, list[str]] = {}
    for trace in fig_json["data"]:
        meta = trace.get("meta") or {}
        if meta.get("role") != "trials":
            continue
        if trace["type"] == "parcoords":
            ids = meta["trial_ids"]
            assert all(len(array(d["values"])) == len(ids) for d in trace["dimensions"])
        else:
            ids = [c[0] for c in trace["customdata"]]
            assert len(array(trace["y"])) == len(ids)
        panels.setdefault(meta["panel"], []).extend(ids)
    return panels


def embedded_figures(html: str) -> dict[str, dict]:
    blocks = re.findall(r"<script type='application/json' class='figure-data' data-target='[^']+' "
                        r"data-name='([^']+)'>(.*?)</script>", html, flags=re.S)
    return {name: json.loads(data) for name, data in blocks}


EXPECTED_FIGURES = {"pareto", "acc_vs_flops", "acc_vs_params", "by_layout", "stage_choices", "progress"}


def check_report(run_dir: Path, out: Path) -> None:
    """Every figure has exactly one point per completed trial, in the returned figures and in the
    written file; plotly.js is inlined once and nothing is fetched from the network."""
    table = load_table(run_dir)
    finished = sorted(table.loc[table["status"] == "completed", "trial_id"])
    assert finished, "the run has no completed trial to plot"
    figures = {name: json.loads(fig.to_json()) for name, fig in build_figures(table).items()}
    html = out.read_text()
    written = embedded_figures(html)
    assert set(figures) == set(written) == EXPECTED_FIGURES
    for source in (figures, written):
        for name, fig in source.items():
            panels = trial_points(fig)
            assert panels, f"{name}: no trial points"
            for panel, ids in panels.items():
                assert sorted(ids) == finished, f"{name}/{panel}"
    bundle = plotly.offline.get_plotlyjs()
    assert html.count(bundle[:300]) == 1 and html.count(bundle[-300:]) == 1  # inlined, once
    page = html.replace(bundle, "")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page) and "cdn.plot.ly" not in page
    hover = " ".join(t.get("text", [""])[0] for t in written["pareto"]["data"] if t.get("text"))
    for word in ("depths", "widths", "params", "FLOPs", "val_acc", "gap", "fit_full"):
        assert word in hover


def test_report_has_every_plot_with_one_point_per_finished_trial(run, tmp_path, capsys):
    run_dir, records = run
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out), "--png"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed
    if importlib.util.find_spec("kaleido") is None:
        assert "skipping PNGs: no image exporter" in printed
    else:
        assert len(list(tmp_path.glob("report-*.png"))) == len(EXPECTED_FIGURES) or "skipping" in printed
    check_report(run_dir, out)
    html = out.read_text()
    for status, count in pd.Series([r["status"] for r in records.values()]).value_counts().items():
        assert f"<td class='status-{status}'>{count}</td>" in html
    assert "gap (min), fit_full (max)" in html and "max_flops=5M" in html
    for trial_id in expected_front(records):
        assert f"<td class='text'>{trial_id}</td>" in html
    assert (run_dir / "table.parquet").is_file()


def test_pareto_figure_marks_exactly_the_two_objective_front(run):
    run_dir, records = run
    fig = json.loads(build_figures(load_table(run_dir))["pareto"].to_json())
    diamonds = {c[0] for t in fig["data"] if (t.get("meta") or {}).get("role") == "trials"
                for c, s in zip(t["customdata"], t["marker"]["symbol"]) if s == "diamond"}
    done = completed(records)
    values = np.array([[r["metrics"]["fit_full"], r["metrics"]["gap"]] for r in done.values()])
    front = {i for i, r in zip(done, pareto_ranks(values, ["max", "min"])) if r == 0}
    assert diamonds == front


# ---- export / build / show -------------------------------------------------------------------

def test_export_pareto_then_build_gives_the_same_model(run, tmp_path, capsys):
    run_dir, records = run
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--pareto", "--out", str(out)]) == 0
    paths = sorted(out.glob("*.yaml"))
    configs = [yaml.safe_load(p.read_text()) for p in paths]
    assert {c["trial_id"] for c in configs} == expected_front(records)
    for path, config in zip(paths, configs):
        record = records[config["trial_id"]]
        assert config["arch_id"] == record["arch_id"] == Architecture.load(path).arch_id
        assert config["metrics"]["val_acc"] == pytest.approx(record["metrics"]["val_acc"])
        model = build(path, load_weights=False)
        assert model.arch.arch_id == record["arch_id"]
        assert sum(p.numel() for p in model.parameters()) == record["cost"]["params"]
        capsys.readouterr()
        assert main(["build", str(path), "--no-weights"]) == 0
        printed = capsys.readouterr().out
        assert record["arch_id"] in printed and f"{record['cost']['params']:,}" in printed
    # the input the weights expect: the digits normalisation the trials used, and the classes
    digits = load_data("digits", configs[0]["architecture"]["resolution"], in_channels=1)
    assert configs[0]["input"]["mean"] == pytest.approx(list(digits.mean))
    assert configs[0]["input"]["std"] == pytest.approx(list(digits.std))
    assert configs[0]["input"]["class_names"] == list(digits.class_names)


def test_exporting_again_replaces_the_earlier_export(run):
    run_dir, records = run
    first = export_architectures(run_dir, pareto=True)
    top = export_architectures(run_dir, top=1, by="val_acc")
    stale = first[0].parent / "09-C-C-C-C-0123456789abcdef.yaml"  # from an earlier, larger front
    stale.write_text(first[0].read_text())
    again = export_architectures(run_dir, pareto=True)
    assert not stale.exists()
    assert [p.name for p in again] == [p.name for p in first]
    assert sorted(first[0].parent.glob("*.yaml")) == sorted(again)  # nothing left over
    assert top[0].parent != first[0].parent and top[0].exists()


def test_export_top_k_by_metric_and_trained_weights_load(run, tmp_path, capsys):
    run_dir, records = run
    done = completed(records)
    best = sorted(done, key=lambda i: done[i]["metrics"]["val_acc"], reverse=True)[:3]
    paths = export_architectures(run_dir, tmp_path / "top", top=3, by="val_acc")
    assert [yaml.safe_load(p.read_text())["trial_id"] for p in paths] == best
    worst = sorted(done, key=lambda i: done[i]["metrics"]["gap"])[:2]
    assert main(["export", str(run_dir), "--top", "2", "--by", "gap", "--out", str(tmp_path / "g")]) == 0
    assert [yaml.safe_load(p.read_text())["trial_id"] for p in sorted((tmp_path / "g").glob("*.yaml"))] == worst
    # The trial that kept weights: build loads them (weights_only) and they equal the saved ones.
    kept = next(r for r in done.values() if r["weights"])
    path = export_architectures(run_dir, tmp_path / "w", top=len(done), by="val_acc")
    config_path = next(p for p in path if yaml.safe_load(p.read_text())["trial_id"] == kept["trial_id"])
    saved = torch.load(run_dir / kept["weights"], weights_only=True)
    model = build(config_path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    fresh = build(config_path, load_weights=False)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), saved.values()))
    capsys.readouterr()
    assert main(["build", str(config_path)]) == 0
    assert str((run_dir / kept["weights"]).resolve()) in capsys.readouterr().out


def test_build_errors_name_the_file(run, tmp_path, capsys):
    run_dir, _ = run
    config = export_architectures(run_dir, tmp_path, top=1, by="val_acc")[0]
    data = yaml.safe_load(config.read_text())
    data["weights"] = str(tmp_path / "gone.pt")
    config.write_text(yaml.safe_dump(data))
    assert main(["build", str(config)]) == 2
    assert "gone.pt: weights file not found" in capsys.readouterr().err
    data["architecture"]["stages"][0]["depth"] = 0
    config.write_text(yaml.safe_dump(data))
    assert main(["build", str(config)]) == 2
    assert f"{config}: stages[0].depth" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--top", "2", "--by", "nonsense"]) == 2
    assert "--by 'nonsense': no such metric" in capsys.readouterr().err


def test_show_prints_the_front_first(run, capsys):
    run_dir, records = run
    assert main(["show", str(run_dir), "--top", "3"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert f"completed {len(completed(records))}," in lines[0]
    body = lines[lines.index(next(l for l in lines if l.lstrip().startswith("trial_id"))) + 1:]
    assert len(body) == 3
    front = expected_front(records)
    assert body[0].split()[0] in front
    assert main(["show", str(run_dir), "--by", "val_acc", "--top", "1"]) == 0
    top = max(completed(records).values(), key=lambda r: r["metrics"]["val_acc"])
    assert capsys.readouterr().out.splitlines()[-1].split()[0] == top["trial_id"]


# ---- a real (tiny) search ----------------------------------------------------------------------

TINY_SEARCH = {
    "name": "results-tiny", "space": "digits",
    "trial": {"data": "digits", "resolution": 16, "small_per_class": 10,
              "train": {"epochs": 2, "batch_size": 32, "steps_per_epoch": 4, "eval_batch_size": 512,
                        "warmup_epochs": 0.0, "seed": 0}},
    "num_trials": 3,
    "objectives": OBJECTIVES,
    "sampler": {"name": "random", "seed": 0},
    "budget": {"max_params": 400_000},
    "scheduler": {"name": "none"},
    "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
    "keep_weights": True,
}


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """One real search (Ray Tune + Optuna, real training) per test session of this module."""
    from nas.config import SearchConfig
    from nas.search import search

    root = tmp_path_factory.mktemp("real-search")
    config = SearchConfig.from_dict(dict(TINY_SEARCH, out_dir=str(root)))
    summary = search(config, run_dir=root / "run")
    assert not summary.interrupted
    return summary.run_dir


@pytest.mark.slow
def test_report_of_a_real_search(real_run, tmp_path, capsys):
    records = {r["trial_id"]: r for r in RunDirectory(real_run).read_records()}
    assert sum(r["status"] == "completed" for r in records.values()) >= 1
    out = tmp_path / "real.html"
    assert main(["report", str(real_run), "--out", str(out)]) == 0
    check_report(real_run, out)
    table = load_table(real_run)
    assert len(table) == len(records) and table.attrs["summary"] is not None
    for row in table.itertuples(index=False):
        assert row.params == records[row.trial_id]["cost"]["params"]
    # export the front, rebuild with the trained weights the search kept
    assert main(["export", str(real_run), "--pareto", "--out", str(tmp_path / "front")]) == 0
    for path in sorted((tmp_path / "front").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        record = records[config["trial_id"]]
        assert record["status"] == "completed"
        model = build(path)
        assert model.arch.arch_id == record["arch_id"]
        assert sum(p.numel() for p in model.parameters()) == record["cost"]["params"]
        if record["weights"]:
            saved = torch.load(real_run / record["weights"], weights_only=True)
            assert all(torch.equal(t, saved[k]) for k, t in model.state_dict().items())
    assert main(["show", str(real_run)]) == 0
    assert "top" in capsys.readouterr().out


@pytest.mark.slow
def test_standalone_export_of_a_real_search(real_run, tmp_path):
    """Every front member of a real search as ONNX and .pt2, each run where hybrid-nas cannot be
    imported, giving `build`'s logits on real digits."""
    for package in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(package)
    out = tmp_path / "front"
    assert main(["export", str(real_run), "--pareto", "--format", "onnx", "--format", "pt2",
                 "--out", str(out)]) == 0
    table = load_table(real_run)
    front = set(table.loc[table["pareto_rank"] == 0, "trial_id"])
    paths = sorted(out.glob("*.yaml"))
    configs = [yaml.safe_load(p.read_text()) for p in paths]
    assert {c["trial_id"] for c in configs} == front
    jobs, expected = [], []
    for path, config in zip(paths, configs):
        assert {a["file"] for a in config["artifacts"].values()} == \
               {path.with_suffix(".onnx").name, path.with_suffix(".pt2").name}
        pre = config["input"]
        images = load_data(pre["data"], pre["resolution"], in_channels=pre["in_channels"]).val_x[:4]
        with torch.no_grad():
            expected.append(build(path).eval()(images))
        jobs.append((path, images))
    onnx_runs = onnx_alone(tmp_path, [(p.with_suffix(".onnx"), x) for p, x in jobs])
    pt2_runs = pt2_alone(tmp_path, [(p.with_suffix(".pt2"), x) for p, x in jobs])
    for reference, config, (onnx_logits, _), (pt2_logits, _) in zip(expected, configs, onnx_runs, pt2_runs):
        assert float((onnx_logits - reference).abs().max()) < 1e-4, config["layout"]
        assert float((pt2_logits - reference).abs().max()) < 1e-4, config["layout"]


def test_trial_ids_and_labels_print_as_written(tmp_path):
    """A numeric-looking trial id (Ray Tune's are hex, some all digits) is a label, not a number:
    the report's Pareto table prints it as written, never as 7.989e+07."""
    from results.formatting import fmt

    assert [fmt(v) for v in ("79885276", "1e5", "007", 79885276, 0.123456, 3.0)] == \
        ["79885276", "1e5", "007", "79885276", "0.1235", "3"]
    run_dir = tmp_path / "numeric-ids"
    (only,) = write_run(run_dir, n_trials=1, statuses=("completed",))
    store = RunDirectory(run_dir)
    store.record_path(only["trial_id"]).unlink()
    store.write_record({**only, "trial_id": "79885276"})
    html = write_report(run_dir, out=tmp_path / "report.html").read_text()
    assert "<td class='text'>79885276</td>" in html
    assert "7.989e+07" not in html


def test_a_run_with_no_trial_yet(tmp_path, capsys):
    run_dir = tmp_path / "fresh"
    write_run(run_dir, n_trials=0, finished=False)
    assert main(["show", str(run_dir)]) == 0
    assert "no completed trial yet" in capsys.readouterr().out
    assert main(["report", str(run_dir)]) == 2
    assert "no trial recorded yet" in capsys.readouterr().err
