"""Unclear inputs answered by one line naming the field or file, exit status 2, no traceback
(issue 13, items 4, 5, 8, 9): an exported config without `resolution`, `weights: 42`, a
non-positive `--top`, and weights that torch.load(weights_only=True) refuses."""

from __future__ import annotations

import collections

import pytest
import torch
import yaml

from nas.cli import main
from results.export import export_architectures
from run_factory import SEED, write_run
from search_spaces.architecture import Architecture, ArchitectureError


class Payload:
    """A class that only this test module defines: pickled into a weights file, it is an object
    torch's weights-only loader must refuse to rebuild."""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "run"
    write_run(path, n_trials=6, seed=SEED)
    return path


@pytest.fixture
def config(run_dir, tmp_path):
    """An exported config of the trial that kept weights, and its YAML as a dict."""
    paths = export_architectures(run_dir, tmp_path, top=6, by="params")
    path = next(p for p in paths if yaml.safe_load(p.read_text())["weights"])
    return path, yaml.safe_load(path.read_text())


def one_line_error(capsys, command: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing else)."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"hybrid-nas {command}: error: ") and "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize("field", ["resolution", "in_channels", "num_classes"])
def test_build_names_a_missing_input_field_instead_of_a_default(config, capsys, field):
    path, data = config
    del data["architecture"][field]
    path.write_text(yaml.safe_dump(data))
    assert main(["build", str(path)]) == 2
    assert one_line_error(capsys, "build").endswith(f"{path}: {field}: missing required field")
    with pytest.raises(ArchitectureError, match=f"^{field}: missing required field$"):
        Architecture.from_dict(data["architecture"])


def test_head_may_still_be_left_out(config):
    _, data = config
    arch = Architecture.from_dict({k: v for k, v in data["architecture"].items() if k != "head"})
    assert arch.head == "pool" and arch.arch_id == data["arch_id"]


@pytest.mark.parametrize("value", [42, 3.5, True, ["a.pt"], {"path": "a.pt"}])
def test_weights_that_are_not_a_path_are_named(config, capsys, value):
    path, data = config
    data["weights"] = value
    path.write_text(yaml.safe_dump(data))
    assert main(["build", str(path)]) == 2
    assert one_line_error(capsys, "build").endswith(
        f"{path}: weights: expected a file path, got {value!r}")


@pytest.mark.parametrize("command", ["show", "export"])
@pytest.mark.parametrize("top", ["0", "-3"])
def test_non_positive_top_is_refused(run_dir, tmp_path, capsys, command, top):
    extra = ["--by", "val_acc", "--out", str(tmp_path / "out")] if command == "export" else []
    assert main([command, str(run_dir), "--top", top, *extra]) == 2
    assert one_line_error(capsys, command) == \
        f"hybrid-nas {command}: error: --top must be a positive integer, got {top}"
    assert not (tmp_path / "out").exists()
    assert main(["show", str(run_dir), "--top", "1"]) == 0  # the smallest valid value still works


def test_show_all_respects_top(run_dir, capsys):
    assert main(["show", str(run_dir), "--all", "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("trial_id"))
    assert len(lines) - header - 1 == 2


@pytest.mark.parametrize("payload", [Payload(), collections.OrderedDict(a=Payload())])
def test_refused_weights_say_why_in_our_words(config, tmp_path, capsys, payload):
    path, data = config
    weights = tmp_path / "payload.pt"
    state = torch.load(path.parent / data["weights"], weights_only=True)
    torch.save({**state, "extra": payload}, weights)
    data["weights"] = str(weights)
    path.write_text(yaml.safe_dump(data))
    assert main(["build", str(path)]) == 2
    line = one_line_error(capsys, "build")
    assert f"{weights}: refused to load the weights: the file holds objects other than tensors " \
           f"({__name__}.Payload), which loading would have to execute" in line
    assert "weights_only=False" not in line and "weights_only" not in line
    assert "trust" not in line  # no invitation to load it anyway


def test_unreadable_weights_are_one_line(config, tmp_path, capsys):
    path, data = config
    weights = tmp_path / "truncated.pt"
    weights.write_bytes((path.parent / data["weights"]).read_bytes()[:300])
    data["weights"] = str(weights)
    path.write_text(yaml.safe_dump(data))
    assert main(["build", str(path)]) == 2
    line = one_line_error(capsys, "build")
    assert f"{weights}: cannot read weights (not a file written by torch.save, or damaged)" in line
