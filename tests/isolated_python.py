"""Test helper: run Python in a subprocess that sees only some installed distributions (and those
they require), never hybrid-nas: a folder of symlinks to their top-level packages, put on the
path of an isolated interpreter (`python -I -S`: no site-packages, no current directory). Each
script first asserts that the project (and whatever else the caller names) cannot be imported.

`onnx_alone` and `pt2_alone` run exported artifacts that way: ONNX files where only onnxruntime and
numpy can be imported, .pt2 files where only torch can.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from packaging.requirements import Requirement

PRELUDE = """\
import sys
sys.path.insert(0, {site!r})
for module in {absent!r}:
    try:
        __import__(module)
    except ImportError:
        pass
    else:
        raise SystemExit("isolation broken: " + module + " is importable")
"""
PROJECT = ("search_spaces", "evaluators", "results", "nas")


def requirement_closure(names: list[str]) -> list[importlib.metadata.Distribution]:
    """The installed distributions `names` and, recursively, what they require (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in found:
            continue
        found[key] = importlib.metadata.distribution(name)
        for line in found[key].requires or ():
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def isolated_site(folder: Path, names: list[str]) -> Path:
    """`folder` holding symlinks to the top-level modules of `names`' requirement closure."""
    folder.mkdir(parents=True, exist_ok=True)
    for distribution in requirement_closure(names):
        for file in distribution.files or ():
            top = file.parts[0]
            if top == ".." or top.endswith((".dist-info", ".pth")) or top == "__pycache__":
                continue
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(distribution.locate_file(top)).resolve())
    return folder


def run_isolated(site: Path, script: str, *args: str, absent: tuple[str, ...] = (),
                 timeout: float = 300) -> str:
    """Run `script` (with sys.argv[1:] = args) where only `site` is importable, after checking
    that neither the project nor `absent` can be imported there; its stdout. Fails the test with
    the subprocess's stderr when it exits non-zero."""
    prelude = PRELUDE.format(site=str(site), absent=PROJECT + tuple(absent))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + script, *args],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"isolated script failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done.stdout


ONNX_SCRIPT = """
import json, numpy as np, onnxruntime as ort
args, metadata = sys.argv[1:], []
for model, images, logits in zip(args[::3], args[1::3], args[2::3]):
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    np.save(logits, session.run(["logits"], {"images": np.load(images)})[0])
    metadata.append({k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()})
print(json.dumps(metadata))
"""

PT2_SCRIPT = """
import json, torch
args, metadata = sys.argv[1:], []
for model, images, logits in zip(args[::3], args[1::3], args[2::3]):
    extra = {"metadata.json": ""}
    program = torch.export.load(model, extra_files=extra)
    with torch.no_grad():
        torch.save(program.module()(torch.load(images, weights_only=True)), logits)
    metadata.append(json.loads(extra["metadata.json"]))
print(json.dumps(metadata))
"""


def onnx_alone(folder: Path, jobs: list[tuple[Path, torch.Tensor]]) -> list[tuple[torch.Tensor, dict]]:
    """Logits and metadata of each (ONNX file, images) run by onnxruntime where only onnxruntime
    and numpy are importable."""
    site = isolated_site(folder / "site-onnxruntime", ["onnxruntime", "numpy"])
    args = []
    for i, (model, images) in enumerate(jobs):
        np.save(folder / f"images-{i}.npy", images.numpy())
        args += [str(model), str(folder / f"images-{i}.npy"), str(folder / f"logits-{i}.npy")]
    metadata = json.loads(run_isolated(site, ONNX_SCRIPT, *args, absent=("torch",)))
    return [(torch.from_numpy(np.load(folder / f"logits-{i}.npy")), meta)
            for i, meta in enumerate(metadata)]


def pt2_alone(folder: Path, jobs: list[tuple[Path, torch.Tensor]]) -> list[tuple[torch.Tensor, dict]]:
    """Logits and metadata of each (.pt2 file, images) run by torch.export.load where only torch
    is importable."""
    site = isolated_site(folder / "site-torch", ["torch"])
    args = []
    for i, (model, images) in enumerate(jobs):
        torch.save(images, folder / f"images-{i}.pt")
        args += [str(model), str(folder / f"images-{i}.pt"), str(folder / f"logits-{i}.pt")]
    metadata = json.loads(run_isolated(site, PT2_SCRIPT, *args, absent=("numpy",)))
    return [(torch.load(folder / f"logits-{i}.pt", weights_only=True), meta)
            for i, meta in enumerate(metadata)]
