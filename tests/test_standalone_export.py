"""Standalone export (`export --format onnx --format pt2`): the chosen networks, with their trained
weights, run without hybrid-nas.

The run here holds one small architecture per block type (C, T, A, G) and an A model with DeiT's
distillation token and two heads, with trained-like weights (perturbed parameters, BatchNorm
statistics from training-mode passes). The ONNX files are run in a subprocess that can import only
onnxruntime and numpy (and what they require), the .pt2 files in one that can import only torch;
both compare their logits with `build` of the same config.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from docs_pages import DOCS, runnable_blocks
from evaluators.data import load_data
from isolated_python import isolated_site, onnx_alone, pt2_alone, run_isolated
from nas.cli import main
from results import standalone
from results.export import build, export_architectures
from results.run_directory import RunDirectory
from run_factory import OBJECTIVES, make_record, write_record
from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.blocks.gpsa import GatedPositionalAttention
from search_spaces.model import build_model

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

# One small architecture per block type, and DeiT's distilled A model, 16-32 px, digits-shaped
# (1 channel, 10 classes).
BLOCK_ARCHS = {
    "C": Architecture(Stem("conv", 16), (Stage("C", 1, 16, 1), Stage("C", 2, 32, 2)),
                      resolution=16, in_channels=1, num_classes=10),
    "T": Architecture(Stem("conv", 16), (Stage("C", 1, 16, 1), Stage("T", 2, 32, 2, head_size=16)),
                      resolution=32, in_channels=1, num_classes=10),
    "A": Architecture(Stem("patch", 32, 4), (Stage("A", 2, 32, 1, head_size=16, pos_embed=True),),
                      resolution=16, in_channels=1, num_classes=10, head="token"),
    "G": Architecture(Stem("patch", 32, 4), (Stage("G", 2, 32, 1, head_size=16, pos_embed=True),
                                             Stage("A", 1, 32, 1, head_size=16, qkv_bias=False)),
                      resolution=32, in_channels=1, num_classes=10, head="token"),
    # DeiT's distilled model: class and distillation tokens, two heads averaged at inference
    "A+distill": Architecture(Stem("patch", 32, 4), (Stage("A", 2, 32, 1, head_size=16, pos_embed=True),),
                              resolution=16, in_channels=1, num_classes=10, head="token",
                              distill_token=True),
}
EXPORT = ["--format", "onnx", "--format", "pt2"]


def trained_like_state(arch: Architecture, seed: int) -> dict[str, torch.Tensor]:
    """Weights that are not an initialisation: every parameter perturbed (relative-bias tables,
    gates, position embeddings included) and BatchNorm running statistics moved by training-mode
    passes, so that eval-mode export has something to get wrong."""
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        model.train()
        for _ in range(3):
            model(1.5 * torch.randn(8, arch.in_channels, arch.resolution, arch.resolution) + 0.3)
    return model.state_dict()


def write_block_run(run_dir, archs: dict[str, Architecture], weights: bool = True) -> dict[str, str]:
    """A finished run with one completed trial per architecture, all on the Pareto front (gap and
    fit_full rise together); returns trial_id by block name."""
    store = RunDirectory(run_dir)
    store.write_config({"name": "blocks", "space": "digits", "objectives": OBJECTIVES,
                        "trial": {"data": "digits", "train": {"epochs": 1}}})
    rng = np.random.default_rng(0)
    trial_ids = {}
    for number, (name, arch) in enumerate(archs.items()):
        record = make_record(arch, number, "completed", rng, epochs=1)
        record["objectives"] = {"gap": 0.1 * (number + 1), "fit_full": 0.5 + 0.1 * number}
        if weights:
            path = run_dir / "weights" / f"{record['trial_id']}.pt"
            path.parent.mkdir(exist_ok=True)
            torch.save(trained_like_state(arch, number), path)
            record["weights"] = f"weights/{path.name}"
        write_record(run_dir, record)
        trial_ids[name] = record["trial_id"]
    store.write_summary({"counts": {"completed": len(archs)}})
    return trial_ids


def cli(*argv: str) -> tuple[int, str, str]:
    """`hybrid-nas ARGV`: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The four-block run exported with `--pareto --format onnx --format pt2`, once."""
    root = tmp_path_factory.mktemp("standalone")
    trial_ids = write_block_run(root / "run", BLOCK_ARCHS)
    out = root / "exported"
    status, stdout, stderr = cli("export", str(root / "run"), "--pareto", *EXPORT, "--out", str(out))
    configs = {}
    for path in sorted(out.glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        block = next(b for b, trial in trial_ids.items() if trial == config["trial_id"])
        configs[block] = (path, config)
    return {"root": root, "out": out, "status": status, "stdout": stdout, "stderr": stderr,
            "configs": configs}


def input_batch(config: dict, count: int = 5) -> torch.Tensor:
    """Real digits, normalised as the config's `input` says (the validation images)."""
    pre = config["input"]
    data = load_data(pre["data"], pre["resolution"], in_channels=pre["in_channels"])
    assert data.mean == pytest.approx(pre["mean"]) and data.std == pytest.approx(pre["std"])
    return data.val_x[:count].contiguous()


def reference_logits(path) -> torch.Tensor:
    """What `hybrid-nas build CONFIG` rebuilds (architecture and trained weights), in eval mode."""
    model = build(path).eval()
    config = yaml.safe_load(path.read_text())
    with torch.no_grad():
        return model(input_batch(config))


# ---- what export writes --------------------------------------------------------------------------

def test_every_front_member_gets_both_artifacts_checked_and_recorded(exported):
    assert exported["status"] == 0, exported["stderr"]
    assert exported["stderr"] == ""
    assert set(exported["configs"]) == set(BLOCK_ARCHS)  # all are on the front
    out = exported["out"]
    for block, (path, config) in exported["configs"].items():
        assert set(config["artifacts"]) == {"onnx", "pt2"} and "artifact_errors" not in config
        for fmt, artifact in config["artifacts"].items():
            assert artifact["file"] == path.with_suffix(f".{fmt}").name  # relative to the YAML
            assert (path.parent / artifact["file"]).stat().st_size > 1000
            assert 0 <= artifact["max_abs_diff"] < 1e-4
            assert f"{fmt:<4} {artifact['file']}  (max abs logit difference against PyTorch: " \
                   f"{artifact['max_abs_diff']:.1e})" in exported["stdout"]
    assert not list(out.glob(".*"))  # no temporary file left behind


def test_onnx_graph_has_the_promised_interface_and_metadata(exported):
    for block, (path, config) in exported["configs"].items():
        model = onnx.load(path.with_suffix(".onnx"))
        onnx.checker.check_model(model)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        arch = BLOCK_ARCHS[block]
        (image,), (logits,) = model.graph.input, model.graph.output
        assert image.name == "images" and logits.name == "logits"
        assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim]
        assert dims == ["batch", arch.in_channels, arch.resolution, arch.resolution]
        assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == \
               ["batch", arch.num_classes]
        metadata = {p.key: json.loads(p.value) for p in model.metadata_props}
        assert metadata["arch_id"] == config["arch_id"] == arch.arch_id
        assert metadata["resolution"] == arch.resolution and metadata["layout"] == arch.layout
        for key in ("mean", "std", "class_names"):
            assert metadata[key] == config["input"][key]


@pytest.mark.parametrize("fmt, run_alone", [("onnx", onnx_alone), ("pt2", pt2_alone)])
def test_artifacts_run_without_hybrid_nas_and_match_build(exported, tmp_path, fmt, run_alone):
    """ONNX where only onnxruntime and numpy can be imported, .pt2 where only torch can: the
    logits `build` gives on real digits, and the metadata the config records."""
    configs = exported["configs"]
    jobs = [(path.with_suffix(f".{fmt}"), input_batch(config)) for path, config in configs.values()]
    for (block, (path, config)), (logits, metadata) in zip(configs.items(), run_alone(tmp_path, jobs)):
        difference = float((logits - reference_logits(path)).abs().max())
        assert difference < 1e-4, f"{block}: {difference}"
        side = BLOCK_ARCHS[block].resolution
        assert metadata["arch_id"] == config["arch_id"] == BLOCK_ARCHS[block].arch_id
        assert metadata["input_shape"] == ["batch", 1, side, side]
        for key in ("mean", "std", "class_names"):
            assert metadata[key] == config["input"][key]


EXPORT_PAGE = DOCS / "user-guide" / "results-and-export.md"


def manual_block(marker: str) -> str:
    """The manual's runnable python block (results and export) that contains `marker`."""
    return next(code for _, code in runnable_blocks(EXPORT_PAGE, "python") if marker in code)


def test_the_manual_lines_run_an_exported_model_alone(exported, tmp_path):
    """The manual's five lines per runtime (docs/user-guide/results-and-export.md), as written
    there (only the file name replaced), on raw [0, 1] pixels: they normalise with the metadata and
    give `build`'s logits."""
    path, config = exported["configs"]["T"]
    images = input_batch(config)
    pixels = images * torch.tensor(config["input"]["std"]).view(-1, 1, 1) \
        + torch.tensor(config["input"]["mean"]).view(-1, 1, 1)
    assert 0 <= float(pixels.min()) and float(pixels.max()) <= 1 + 1e-6
    expected = reference_logits(path)
    np.save(tmp_path / "pixels.npy", pixels.numpy())
    torch.save(pixels, tmp_path / "pixels.pt")
    runs = {
        "onnx": (["onnxruntime", "numpy"], "import numpy as np\npixels = np.load(sys.argv[1])\n",
                 "np.save(sys.argv[2], logits)\n", "pixels.npy"),
        "pt2": (["torch"], "import torch\npixels = torch.load(sys.argv[1], weights_only=True)\n",
                "torch.save(logits, sys.argv[2])\n", "pixels.pt"),
    }
    for fmt, (packages, before, after, source) in runs.items():
        lines = manual_block(f".{fmt}\"")
        assert len(lines.strip().splitlines()) == 5
        script = before + re.sub(rf'"[^"]*\.{fmt}"', repr(str(path.with_suffix(f".{fmt}"))), lines) + after
        site = isolated_site(tmp_path / f"site-{fmt}", packages)
        run_isolated(site, script, str(tmp_path / source), str(tmp_path / f"logits-{fmt}"))
        logits = (torch.from_numpy(np.load(tmp_path / "logits-onnx.npy")) if fmt == "onnx"
                  else torch.load(tmp_path / "logits-pt2", weights_only=True))
        assert not logits.requires_grad and float((logits - expected).abs().max()) < 1e-4, fmt


# ---- failures: named, contained, and no file that looks valid -----------------------------------

def test_an_unexportable_block_is_named_and_the_other_models_still_export(exported, monkeypatch):
    original = GatedPositionalAttention.forward

    def data_dependent(self, x, grid):  # Python control flow on a tensor's value: not traceable
        out = original(self, x, grid)
        return out if bool(out.sum() > -1e9) else -out

    monkeypatch.setattr(GatedPositionalAttention, "forward", data_dependent)
    out = exported["root"] / "broken"
    status, stdout, stderr = cli("export", str(exported["root"] / "run"), "--top", "2", "--by", "gap",
                                 "--max", *EXPORT, "--out", str(out))  # the G and the A model
    assert status == 1
    errors = [line for line in stderr.splitlines() if " not written: " in line]
    assert len(errors) == 2  # onnx and pt2 of the G model, one line each
    for line in errors:
        assert line.startswith("hybrid-nas export: error: ") and "-G-A-" in line
        assert "stages[0].blocks[0] (a G block, GPSABlock)" in line
        assert "data-dependent" in line.lower()
    assert "Traceback" not in stderr
    configs = {yaml.safe_load(p.read_text())["layout"]: p for p in out.glob("*.yaml")}
    assert set(configs) == {"G-A", "A"}
    broken = yaml.safe_load(configs["G-A"].read_text())
    assert broken["artifacts"] == {} and set(broken["artifact_errors"]) == {"onnx", "pt2"}
    assert not list(out.glob(f"{configs['G-A'].stem}*.onnx")) and not list(out.glob("*G-A*.pt2"))
    for layout, path in configs.items():
        if layout != "G-A":
            assert set(yaml.safe_load(path.read_text())["artifacts"]) == {"onnx", "pt2"}
            assert path.with_suffix(".onnx").is_file() and path.with_suffix(".pt2").is_file()
    assert not list(out.glob(".*"))


def test_an_artifact_that_fails_its_check_is_not_written(exported, monkeypatch, tmp_path):
    monkeypatch.setattr(standalone, "TOLERANCE", 0.0)  # no difference can be below it
    out = tmp_path / "strict"
    status, _, stderr = cli("export", str(exported["root"] / "run"), "--top", "1", "--by", "gap",
                            *EXPORT, "--out", str(out))
    assert status == 1
    assert stderr.count("max abs logit difference") == 2 and "is not below 0" in stderr
    (config,) = out.glob("*.yaml")
    assert yaml.safe_load(config.read_text())["artifacts"] == {}
    assert [p.name for p in out.iterdir()] == [config.name]  # no artifact, no temporary file


def test_exporting_again_replaces_earlier_artifacts(exported, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(exported["out"], out)
    stale = out / "07-C-C-0123456789abcdef.onnx"
    stale.write_bytes(b"stale")
    paths = export_architectures(exported["root"] / "run", out, top=1, by="val_acc")  # yaml only
    assert [p.name for p in sorted(out.iterdir())] == [paths[0].name]
    assert yaml.safe_load(paths[0].read_text())["artifacts"] == {}


def test_a_trial_without_weights_gets_an_error_not_an_untrained_model(tmp_path):
    write_block_run(tmp_path / "run", {"C": BLOCK_ARCHS["C"]}, weights=False)
    status, _, stderr = cli("export", str(tmp_path / "run"), "--pareto", "--format", "pt2",
                            "--out", str(tmp_path / "out"))
    assert status == 1
    assert "pt2 not written: no trained weights recorded for this trial" in stderr
    assert not list((tmp_path / "out").glob("*.pt2"))


def test_bad_format_requests_are_one_line_errors(exported, monkeypatch, tmp_path):
    run_dir = str(exported["root"] / "run")
    status, _, stderr = cli("export", run_dir, "--pareto", "--format", "onnx,tflite",
                            "--out", str(tmp_path / "x"))
    assert status == 2
    assert stderr == "hybrid-nas export: error: --format 'tflite': unknown format " \
                     "(choose from yaml, onnx, pt2)\n"
    find_spec = standalone.importlib.util.find_spec
    monkeypatch.setattr(standalone.importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    status, _, stderr = cli("export", run_dir, "--pareto", "--format", "onnx",
                            "--out", str(tmp_path / "y"))
    assert status == 2 and len(stderr.splitlines()) == 1
    assert "onnx: needs onnx, onnxscript, onnxruntime (missing: onnxscript)" in stderr
    assert "pip install 'hybrid-nas[export]'" in stderr
    assert not (tmp_path / "y").exists()  # refused before anything is written
