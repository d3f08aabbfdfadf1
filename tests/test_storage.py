"""Runs at a URI (results/storage.py and RunDirectory over it), against a real S3-compatible server
(moto) on 127.0.0.1: files written through RunDirectory are read back both through it and straight
from the bucket; show/report/export/build read a run from the bucket; credentials never reach a
run or a message; a wrong bucket or endpoint is one line before Ray starts; writes made while the
store is out wait in the local spool until a resumed driver uploads them; the mirrored Optuna
journal survives a killed driver and moves between machines; the RDB option."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml

from nas.cli import main
from nas.config import SearchConfig
from nas.study import StudyHome
from results import storage
from results.objectives import Objective
from results.run_directory import RunDirectory, new_record, read_run
from results.storage import StorageError, display_uri, join, open_storage, split
from run_factory import sample_architectures, write_run
from servers import FAKE_CREDENTIALS, MotoS3, TcpProxy

SECRET = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moto")
    with pytest.MonkeyPatch.context() as env:
        for key, value in FAKE_CREDENTIALS.items():
            env.setenv(key, value)
        env.setenv(storage.CACHE_ENV, str(folder / "cache"))
        server = MotoS3(folder)
        try:
            yield server
        finally:
            server.close()


def record(trial_id: str, number: int, status: str = "running", **fields) -> dict:
    arch = sample_architectures(1)[0]
    return new_record(trial_id, number, status, arch.to_dict(), arch.arch_id, arch.layout,
                      {"params": 1, "flops": 2, "resolution": 16}, 3, **fields)


def upload_folder(s3: MotoS3, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.client.upload_file(str(path), s3.bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


# ---- the storage layer -------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["s3", "file"])
def test_run_directory_round_trips_every_file_through_a_uri(s3, tmp_path, where):
    location = s3.uri("roundtrip/run") if where == "s3" else f"file://{tmp_path}/run"
    store = RunDirectory(location)
    assert store.is_empty() and not store.is_run()
    with pytest.raises(ValueError, match="no such run directory"):
        store.check()
    store.write_config({"name": "x", "objectives": [{"name": "gap", "direction": "min"}]})
    store.write_record(record("t1", 0, metrics={"gap": 0.25}))
    store.write_record(record("rejected-1", 1, "rejected"))
    assert store.update_record("t1", status="completed")["status"] == "completed"
    store.write_summary({"counts": {"completed": 1}})
    store.write_gave_up("space spent")
    assert store.is_run() and not store.is_empty() and store.name == "run"
    assert store.read_record("t1")["metrics"] == {"gap": 0.25}
    assert store.read_record("missing") is None and store.gave_up() == "space spent"
    run = read_run(location)
    assert [r["trial_id"] for r in run.records] == ["t1", "rejected-1"]
    assert run.summary == {"counts": {"completed": 1}} and run.name == "run"
    store.clear_summary()
    store.clear_gave_up()
    assert store.read_summary() is None and store.gave_up() is None
    if where == "s3":  # the objects themselves, read straight from the bucket
        assert s3.keys("roundtrip/run/") == ["roundtrip/run/search.yaml",
                                             "roundtrip/run/trials/rejected-1.json",
                                             "roundtrip/run/trials/t1.json"]
        assert json.loads(s3.read("roundtrip/run/trials/t1.json"))["status"] == "completed"
        assert store.record_path("t1") == s3.uri("roundtrip/run/trials/t1.json")
    else:
        assert (tmp_path / "run" / "trials" / "t1.json").is_file()
        assert store.record_path("t1") == tmp_path / "run" / "trials" / "t1.json"


def test_uris_join_split_and_hide_credentials():
    uri = "s3://bucket/runs/x?endpoint_override=127.0.0.1:9000&scheme=http"
    assert join(uri, "exported/pareto", "../../weights/a.pt") == \
        "s3://bucket/runs/x/weights/a.pt?endpoint_override=127.0.0.1:9000&scheme=http"
    assert split(join(uri, "a.yaml")) == (uri, "a.yaml")
    assert display_uri("s3://AKID:VERYSECRET@bucket/x?secret_key=VERYSECRET&region=eu") == \
        "s3://bucket/x?secret_key=%2A%2A%2A&region=eu"
    with pytest.raises(ValueError, match="not a storage URI pyarrow can open"):
        open_storage("nosuchscheme://bucket/x")


def test_credentials_in_a_uri_are_refused_and_never_printed(s3, tmp_path, capsys):
    with_userinfo = "s3://AKIDEXAMPLE:" + SECRET + "@bucket/x?endpoint_override=127.0.0.1:1"
    with_query = s3.uri("x") + "&secret_key=" + SECRET
    for uri in (with_userinfo, with_query):
        assert main(["search", "--out", uri]) == 2
        assert main(["show", uri]) == 2
        err = capsys.readouterr().err
        assert err.count("must not carry credentials") == 2
        assert SECRET not in err and "AKIDEXAMPLE" not in err
    with pytest.raises(ValueError, match="search.out_dir: .*must not carry credentials"):
        SearchConfig.from_dict({"out_dir": with_userinfo})


def test_a_wrong_bucket_or_endpoint_is_one_line_before_ray_starts(s3, tmp_path, capsys):
    import ray

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"name": "never", "num_trials": 1}))
    closed = TcpProxy(s3.port)
    closed.down()  # a port where nothing listens
    for uri, named in ((s3.uri("runs/x").replace("s3://bucket/", "s3://no-such-bucket/"),
                        "no-such-bucket"),
                       (s3.uri("runs/x", port=closed.port), f"127.0.0.1:{closed.port}")):
        assert main(["search", str(config), "--out", uri]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and named in err and "cannot use this run storage" in err
        assert not ray.is_initialized()
        assert main(["search", "--resume", uri]) == 2
        assert named in capsys.readouterr().err
    assert s3.keys("runs/") == []


def test_writes_wait_in_the_spool_while_the_store_is_out(s3, monkeypatch):
    monkeypatch.setattr(storage, "RETRY_DELAYS_S", ())  # pyarrow still retries inside
    proxy = TcpProxy(s3.port)
    uri = s3.uri("spooled/run", proxy.port)
    driver = RunDirectory(uri, writer=True)
    driver.write_config({"name": "x"})
    driver.write_record(record("t1", 0))
    checkpoint = "spooled/run/ray/s/t1/checkpoint_000000/model.pt"
    s3.client.put_object(Bucket=s3.bucket, Key=checkpoint, Body=b"weights of t1")
    spool = driver.storage.spool
    assert not [p for p in spool.rglob("*") if p.is_file()]  # uploaded: nothing waits
    try:
        proxy.down()
        driver.update_record("t1", status="completed")  # a finished trial: no error here...
        fs = driver.storage.remote.fs
        driver.update_record("t1", weights=driver.save_weights("t1", f"{s3.bucket}/{checkpoint}", fs))
        with pytest.raises(StorageError, match="kept in .*spool.* --resume s3://bucket/spooled/run"):
            driver.storage.raise_if_failed()  # ...the driver stops at the end of its step
        assert not driver.storage.healthy()
        assert driver.read_record("t1")["status"] == "completed"  # read back from memory
        assert json.loads((spool / "trials" / "t1.json").read_text())["status"] == "completed"
        assert json.loads(s3.read("spooled/run/trials/t1.json"))["status"] == "running"
    finally:
        proxy.up()
    resumed = RunDirectory(uri, writer=True)  # a resumed driver, same machine
    assert resumed.storage.drain() == 2  # the record and the pending weights copy
    assert json.loads(s3.read("spooled/run/trials/t1.json"))["weights"] == "weights/t1.pt"
    assert s3.read("spooled/run/weights/t1.pt") == b"weights of t1"
    assert not [p for p in spool.rglob("*") if p.is_file()]
    proxy.down()


# ---- reading a run from the bucket -----------------------------------------------------------------

def test_show_report_export_and_build_read_a_run_from_the_bucket(s3, tmp_path, monkeypatch,
                                                                   capsys):
    local = tmp_path / "made-here"
    records = {r["trial_id"]: r for r in write_run(local, n_trials=8, weights_for=2)}
    completed = [r for r in records.values() if r["status"] == "completed"]
    upload_folder(s3, local, "copied/made-here")
    uri = s3.uri("copied/made-here")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")

    assert main(["show", uri]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"{uri}: 8 trials (finished)")
    assert all(r["trial_id"] in shown for r in completed)

    assert main(["report", uri]) == 0
    report = Path("made-here") / "report.html"  # ./<run name>/ for a run at a URI
    assert f"report written to {report.resolve()}" in capsys.readouterr().out
    assert "<h1>hybrid-nas report: made-here</h1>" in report.read_text()
    assert len(__import__("pandas").read_parquet(Path("made-here") / "table.parquet")) == 8

    assert main(["export", uri, "--top", "8", "--by", "val_acc"]) == 0
    capsys.readouterr()
    exported = sorted(Path("made-here/exported/top8-val_acc").glob("*.yaml"))
    assert {yaml.safe_load(p.read_text())["trial_id"] for p in exported} == \
        {r["trial_id"] for r in completed}
    with_weights = 0
    for path in exported:
        config = yaml.safe_load(path.read_text())
        assert config["run_dir"] == uri
        weights = records[config["trial_id"]]["weights"]
        assert bool(config["weights"]) == bool(weights)
        if weights:  # copied from the bucket beside the export; build loads that copy
            with_weights += 1
            assert (path.parent / config["weights"]).read_bytes() == (local / weights).read_bytes()
            assert main(["build", str(path)]) == 0
            assert str((path.parent / config["weights"]).resolve()) in capsys.readouterr().out
    assert with_weights == 2

    # an exported config kept in the bucket (weights relative to it) builds from its URI
    assert main(["export", str(local), "--top", "8", "--by", "val_acc"]) == 0
    capsys.readouterr()
    upload_folder(s3, local / "exported", "copied/made-here/exported")
    for path in sorted((local / "exported" / "top8-val_acc").glob("*.yaml")):
        relative = yaml.safe_load(path.read_text())["weights"]
        if not relative:
            continue
        config_uri = join(uri, "exported/top8-val_acc", path.name)
        assert main(["build", config_uri, "--save", str(tmp_path / "built.pt")]) == 0
        weights_uri = join(uri, "weights", Path(relative).name)
        assert f"weights: {weights_uri}" in capsys.readouterr().out
        state = torch.load(tmp_path / "built.pt", weights_only=True)
        trained = torch.load(path.parent / relative, weights_only=True)
        assert state.keys() == trained.keys()
        assert all(torch.equal(state[k], trained[k]) for k in state)


# ---- the Optuna study of a run at a URI, and in a database ----------------------------------------

def ask_and_tell(study: optuna.Study, n: int) -> None:
    for _ in range(n):
        trial = study.ask()
        trial.set_user_attr("trial_id", f"t{trial.number}")
        study.tell(trial, [trial.suggest_float("x", 0, 1), 0.5])


def test_the_journal_of_a_run_at_a_uri_is_mirrored_and_survives_a_killed_driver(s3, tmp_path,
                                                                              monkeypatch):
    run = RunDirectory(s3.uri("studies/run"), writer=True)
    objectives = [Objective("gap", "min"), Objective("fit_full", "max")]
    home = StudyHome(run, "mirror", fresh=True)
    study = home.create(objectives, optuna.samplers.RandomSampler(seed=0))
    ask_and_tell(study, 3)
    home.sync()
    local = home._journal.path
    assert s3.read("studies/run/study.journal") == local.read_bytes()
    ask_and_tell(study, 2)  # the driver dies before copying these lines
    assert len(s3.read("studies/run/study.journal")) < local.stat().st_size

    again = StudyHome(RunDirectory(s3.uri("studies/run"), writer=True), "mirror")  # same machine
    assert len(again.load(optuna.samplers.RandomSampler()).trials) == 5  # its copy is ahead: kept
    again.sync()  # and uploaded
    assert s3.read("studies/run/study.journal") == local.read_bytes()

    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "another-machine"))
    there = StudyHome(RunDirectory(s3.uri("studies/run"), writer=True), "mirror")
    trials = there.load(optuna.samplers.RandomSampler()).trials
    assert [t.user_attrs["trial_id"] for t in trials] == [f"t{i}" for i in range(5)]
    assert there._journal.path != local and there._journal.path.is_file()

    fresh = StudyHome(RunDirectory(s3.uri("studies/other"), writer=True), "mirror", fresh=True)
    assert not fresh.exists()


def test_a_database_storage_is_validated_and_keeps_the_study(tmp_path):
    for url, message in (("postgresql://nas:hunter2@db.example/studies", "holds a password"),
                         ("not a url", "not a database URL"),
                         ("redis://localhost/0", "unknown database 'redis'")):
        with pytest.raises(ValueError, match=f"search.optuna.storage: .*{message}"):
            SearchConfig.from_dict({"optuna": {"storage": url}})
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    config = SearchConfig.from_dict({"optuna": {"storage": url}})
    assert SearchConfig.from_dict(config.to_dict()).optuna.storage == url
    run = RunDirectory(tmp_path / "20261201-120000-db")
    home = StudyHome(run, "db", url=url)
    assert home.name == "20261201-120000-db" and not home.exists()
    ask_and_tell(home.create([Objective("gap", "min"), Objective("fit_full", "max")],
                             optuna.samplers.RandomSampler(seed=0)), 2)
    again = StudyHome(run, "db", url=url).load(optuna.samplers.RandomSampler())
    assert [t.user_attrs["trial_id"] for t in again.trials] == ["t0", "t1"]
    assert not run.location("study.journal").exists()
    with pytest.raises(ValueError, match="already holds a study named '20261201-120000-db'"):
        StudyHome(run, "db", url=url).create([Objective("gap", "min")],
                                             optuna.samplers.RandomSampler())
