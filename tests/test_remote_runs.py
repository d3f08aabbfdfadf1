"""Searches whose run lives in an object store (moto's S3 on 127.0.0.1), run as a user runs them:
`hybrid-nas search` as a subprocess.

- On a real 2-node Ray cluster on loopback (a head and a worker, one CPU each): trials run on both
  nodes, every record, weight file and TensorBoard event lands in the bucket (the worker's weights
  through Tune's checkpoint upload), the study goes to the configured database (sqlite), no
  credential is written anywhere, and show/report/export/build read the run from the bucket.
- The store goes away mid-run (a proxy in front of the server is stopped): the search ends with
  one clear error, and once the store is back `--resume` finishes it without losing or retraining
  a trial that had finished.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nas.cli import main
from nas.study import StudyHome
from results import storage
from results.run_directory import FINISHED, RunDirectory
from servers import FAKE_CREDENTIALS, MotoS3, RayCluster, TcpProxy

TIMEOUT_S = 600


def tiny_config(tmp: Path, **changes) -> Path:
    config = {
        "name": "remote",
        "space": "digits",
        "trial": {"data": "digits", "resolution": 16, "small_per_class": 10,
                  "train": {"epochs": 2, "batch_size": 32, "steps_per_epoch": 3,
                            "eval_batch_size": 512}},
        "num_trials": 4,
        # readings every run has: these runs are too short to reach train.matched_loss
        "objectives": [{"name": "val_acc", "direction": "max"},
                       {"name": "fit_full", "direction": "max"}],
        "budget": {"max_flops": 2_500_000, "max_params": 400_000},
        "scheduler": {"name": "none"},  # every trial trains its whole budget and keeps weights
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "out_dir": str(tmp),
        **changes,
    }
    path = tmp / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def s3(tmp_path, monkeypatch):
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    server = MotoS3(tmp_path)
    yield server
    server.close()


def cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nas.cli", "search", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, **(env or {})})


def records_in(s3: MotoS3, prefix: str) -> dict[str, dict]:
    return {r["trial_id"]: r for r in (json.loads(s3.read(k))
                                       for k in s3.keys(f"{prefix}/trials/"))}


def finished_in(s3: MotoS3, prefix: str) -> dict[str, dict]:
    return {k: r for k, r in records_in(s3, prefix).items() if r["status"] in FINISHED}


def trained(records: dict[str, dict]) -> dict[str, dict]:
    return {k: r for k, r in records.items() if r["status"] != "rejected"}


@pytest.mark.slow
def test_a_search_on_a_two_node_cluster_keeps_its_run_in_the_bucket(s3, tmp_path, monkeypatch,
                                                                     capsys):
    database = f"sqlite:///{tmp_path / 'studies.db'}"
    config = tiny_config(tmp_path, optuna={"storage": database})
    uri = s3.uri("runs/on-cluster")
    cluster = RayCluster(tmp_path, workers=1, env=FAKE_CREDENTIALS)
    try:
        proc = cli(str(config), "--address", cluster.address, "--out", uri, env=cluster.env)
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    finally:
        cluster.close()
    assert proc.returncode == 0, out
    assert f"-> {uri}" in out and "4/4 trained" in out

    records = records_in(s3, "runs/on-cluster")
    ran = trained(records)
    assert len(ran) == 4 and all(r["status"] == "completed" for r in ran.values())
    nodes = {r["node"]["node_id"] for r in ran.values()}
    assert len(nodes) == 2, "both nodes of the cluster should have run trials"
    keys = set(s3.keys("runs/on-cluster/"))
    for r in ran.values():  # weights from both nodes: Tune's upload, then the driver's copy
        assert r["weights"] == f"weights/{r['trial_id']}.pt"
        weights = s3.read(f"runs/on-cluster/{r['weights']}")
        uploaded = [k for k in keys if f"/{r['trial_id']}/checkpoint_" in k]
        assert len(uploaded) == 1 and s3.read(uploaded[0]) == weights
        assert any(k.startswith(f"runs/on-cluster/tensorboard/{r['trial_id']}/events.") for k in keys)
    assert "runs/on-cluster/study.journal" not in keys  # the study is in the database
    for key in keys:  # no credential anywhere in the run
        assert FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode() not in s3.read(key), key
    assert json.loads(s3.read("runs/on-cluster/summary.json"))["run_dir"] == uri

    study = optuna.load_study(study_name="on-cluster", storage=database)
    told = {t.user_attrs["trial_id"]: t for t in study.trials if "trial_id" in t.user_attrs}
    assert set(told) == set(ran)
    for trial_id, t in told.items():
        assert t.number == ran[trial_id]["number"] and t.state.name == "COMPLETE"
        assert t.user_attrs["layout"] == ran[trial_id]["layout"]
        assert t.user_attrs["params"] == ran[trial_id]["cost"]["params"]

    # show, report and export read the run from the bucket; build loads the bucket's weights
    monkeypatch.chdir(tmp_path)
    assert main(["show", uri]) == 0
    shown = capsys.readouterr().out
    assert all(trial_id in shown for trial_id in ran)
    assert main(["report", uri]) == 0
    assert (tmp_path / "on-cluster" / "report.html").is_file()
    assert main(["export", uri, "--pareto"]) == 0
    capsys.readouterr()
    exported = sorted((tmp_path / "on-cluster" / "exported" / "pareto").glob("*.yaml"))
    assert exported
    for path in exported:
        config = yaml.safe_load(path.read_text())
        assert main(["build", str(path), "--save", str(tmp_path / "built.pt")]) == 0
        built = torch.load(tmp_path / "built.pt", weights_only=True)
        stored = torch.load(io.BytesIO(s3.read(f"runs/on-cluster/{ran[config['trial_id']]['weights']}")),
                            weights_only=True)
        assert all(torch.equal(built[k], stored[k]) for k in stored)


@pytest.mark.slow
def test_a_store_that_goes_away_stops_the_search_and_resume_loses_nothing(s3, tmp_path,
                                                                          monkeypatch):
    proxy = TcpProxy(s3.port)
    uri = s3.uri("runs/outage", proxy.port)
    config = tiny_config(tmp_path, num_trials=3)
    try:
        proc = cli(str(config), "--out", uri)
        deadline = time.time() + TIMEOUT_S
        while not finished_in(s3, "runs/outage"):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline
            time.sleep(0.3)
        before = finished_in(s3, "runs/outage")
        proxy.down()  # the store goes away mid-run
        out, _ = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 2, out
        last = out.strip().splitlines()[-1]
        assert last.startswith(f"hybrid-nas search: error: {uri}: ")
        assert f"hybrid-nas search --resume {uri}" in last

        proxy.up()  # back: resume uploads what waited in the spool, then trains the rest
        proc = cli("--resume", uri)
        out, _ = proc.communicate(timeout=TIMEOUT_S)
        assert proc.returncode == 0, out
    finally:
        proxy.down()

    after = records_in(s3, "runs/outage")
    ran = trained(after)
    assert len(ran) == 3 and all(r["status"] == "completed" for r in ran.values())
    assert len({r["arch_id"] for r in ran.values()}) == 3
    for trial_id, record in before.items():  # finished before the outage: kept, not retrained
        for key in ("status", "started", "ended", "history", "weights"):
            assert after[trial_id][key] == record[key], (trial_id, key)
    for r in ran.values():
        assert s3.read(f"runs/outage/{r['weights']}")
    spool = RunDirectory(uri, writer=True).storage.spool
    assert not [p for p in spool.rglob("*") if p.is_file()]
    # the study in the bucket, as another machine opens it: every trained trial told COMPLETE
    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "another-machine"))
    home = StudyHome(RunDirectory(s3.uri("runs/outage")), "remote")
    study = home.load(optuna.samplers.RandomSampler())
    told = {t.user_attrs.get("record_id"): t.state.name for t in study.trials}
    assert all(told[trial_id] == "COMPLETE" for trial_id in ran)
