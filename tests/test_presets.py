"""Named presets: the published sizes, any input size, YAML round trip, the `preset` command."""

from __future__ import annotations

import pytest
import torch
import yaml

from evaluators.cost import count_cost
from nas.cli import main
from search_spaces.architecture import Architecture, ArchitectureError
from search_spaces.model import build_model
from search_spaces.presets import PRESET_NAMES, get_preset

torch.set_num_threads(1)

# name: (params, FLOPs, tolerance) at 224x224, 1000 classes. CoAtNet: Table 3/4 (stride on the
# first 1x1 conv of a downsampling MBConv, hence Table 4's FLOPs). DeiT: paper/timm. ConViT:
# the paper's parameters; FLOPs as fvcore counts timm's ConViT (with attention matmuls), since
# the paper rounds its own loosely (1G / 5.4G / 17G).
PUBLISHED = {
    "coatnet-0": (25e6, 4.2e9, 0.05),
    "coatnet-1": (42e6, 8.4e9, 0.05),
    "coatnet-2": (75e6, 15.7e9, 0.05),
    "coatnet-3": (168e6, 34.7e9, 0.05),
    "deit-ti": (5.7e6, 1.3e9, 0.03),
    "deit-s": (22e6, 4.6e9, 0.03),
    "deit-b": (86e6, 17.6e9, 0.03),
    "convit-ti": (6e6, 1.257e9, 0.05),
    "convit-s": (27e6, 5.757e9, 0.05),
    "convit-b": (86e6, 17.524e9, 0.05),
}


def within(counted: float, published: float, tolerance: float) -> bool:
    """Within `tolerance` of the published figure, or equal to it at its printed precision
    (DeiT-Ti's "1.3G" is 1.26G rounded: 3.2% off, the rounding alone)."""
    if abs(counted - published) <= tolerance * published:
        return True
    digits = len(f"{published / 1e9:g}".split(".")[-1]) if published % 1e9 else 0
    return round(counted / 1e9, digits) == round(published / 1e9, digits)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_preset_matches_published_size(name):
    params, flops, tolerance = PUBLISHED[name]
    cost = count_cost(get_preset(name))
    assert abs(cost.params - params) <= tolerance * params, f"{name}: {cost}"
    if flops is not None:
        assert within(cost.flops, flops, tolerance), f"{name}: {cost}"


def test_within_only_forgives_rounding():
    assert within(1.26e9, 1.3e9, 0.03) and not within(1.24e9, 1.3e9, 0.03)
    assert not within(4.4e9, 4.2e9, 0.03)


def test_layout_study_is_matched_to_coatnet0():
    reference = count_cost(get_preset("coatnet-0")).params
    for name in ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T", "ViT_REL"):
        arch = get_preset(name)
        assert arch.layout == ("T" if name == "ViT_REL" else name)
        params = sum(p.numel() for p in build_model(arch).parameters())
        assert abs(params - reference) <= 0.03 * reference, (name, params, reference)
    vit_rel = get_preset("ViT_REL")
    assert vit_rel.stem.kind == "patch" and vit_rel.stem.patch_size == 16


def test_coatnet_family_follows_table3():
    arch = get_preset("coatnet-2")
    assert arch.layout == "C-C-T-T" and arch.stem.kind == "conv" and arch.stem.width == 128
    assert [s.depth for s in arch.stages] == [2, 6, 14, 2]
    assert [s.width for s in arch.stages] == [128, 256, 512, 1024]
    assert all(s.head_size == 32 and s.expansion == 4 for s in arch.stages)
    convit = get_preset("convit-s")
    assert convit.layout == "G-A" and [s.depth for s in convit.stages] == [10, 2]
    assert [s.heads for s in convit.stages] == [9, 9] and convit.head == "token"
    deit = get_preset("deit-b")
    assert deit.stages[0].heads == 12 and deit.stages[0].pos_embed and deit.head == "token"


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_at_any_size(name):
    arch = get_preset(name, resolution=64, num_classes=7, in_channels=1)
    assert (arch.resolution, arch.num_classes, arch.in_channels) == (64, 7, 1)
    assert arch.arch_id != get_preset(name).arch_id
    with pytest.raises(ArchitectureError) as err:
        get_preset(name, resolution=72)  # 72 = 8 x 9: no total stride (16 or 32) divides it
    assert err.value.field == "resolution"


def test_small_presets_run_at_small_inputs():
    for name in ("coatnet-0", "deit-ti", "convit-ti"):
        model = build_model(get_preset(name, resolution=32, num_classes=10, in_channels=1)).eval()
        with torch.no_grad():
            assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown preset 'coatnet-9'"):
        get_preset("coatnet-9")


@pytest.mark.parametrize("name", ["coatnet-0", "C-T-T-T", "ViT_REL", "deit-ti", "convit-ti"])
def test_yaml_round_trip_keeps_id_and_parameters(name, tmp_path):
    arch = get_preset(name, resolution=32, num_classes=10)
    path = tmp_path / "arch.yaml"
    arch.save(path)
    back = Architecture.load(path)
    assert back == arch and back.arch_id == arch.arch_id
    count = lambda a: sum(p.numel() for p in build_model(a).parameters())  # noqa: E731
    assert count(back) == count(arch)
    assert Architecture.from_yaml(arch.to_yaml()).arch_id == arch.arch_id


def test_preset_command_prints_loadable_yaml_and_cost(capsys):
    assert main(["preset", "deit-ti", "--resolution", "32", "--classes", "10",
                 "--in-channels", "1"]) == 0
    out = capsys.readouterr().out
    arch = Architecture.from_yaml(out)  # the cost lines are YAML comments
    assert arch == get_preset("deit-ti", resolution=32, num_classes=10, in_channels=1)
    cost = count_cost(arch)
    assert f"params {cost.params:,}" in out and f"FLOPs {cost.flops:,}" in out
    assert yaml.safe_load(out)["stages"][0]["block"] == "A"
    assert main(["preset", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(PRESET_NAMES)
    assert main(["preset", "coatnet-0", "--resolution", "100"]) == 2
    assert "resolution" in capsys.readouterr().err
