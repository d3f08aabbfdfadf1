"""The architecture type: canonical form, identity, validation errors that name the field."""

import json

import pytest

from search_spaces.architecture import Architecture, ArchitectureError, Stage, Stem


def coatnet_like(**changes) -> Architecture:
    arch = Architecture(
        stem=Stem("conv", 64),
        stages=(Stage("C", 2, 96), Stage("C", 3, 192), Stage("T", 5, 384), Stage("T", 2, 768)))
    return arch.replace(**changes) if changes else arch


def test_layout_and_stage_resolutions():
    arch = coatnet_like()
    assert arch.layout == "C-C-T-T"
    assert arch.stage_resolutions() == [56, 28, 14, 7]
    assert arch.total_stride == 32


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip_through_a_file_keeps_identity(tmp_path, fmt):
    arch = coatnet_like(num_classes=10, resolution=64)
    path = tmp_path / f"arch.{fmt}"
    arch.save(path)
    again = Architecture.load(path)
    assert again == arch
    assert again.arch_id == arch.arch_id
    if fmt == "json":
        assert json.loads(path.read_text())["stages"][2]["block"] == "T"


def test_arch_id_changes_with_any_field_and_ignores_conv_head_size():
    base = coatnet_like()
    assert coatnet_like(resolution=256).arch_id != base.arch_id
    wider = base.replace(stages=base.stages[:3] + (Stage("T", 2, 1024),))
    assert wider.arch_id != base.arch_id
    # head_size is meaningless for a convolution stage: it must not split one network in two
    conv_16 = base.replace(stages=(Stage("C", 2, 96, head_size=16),) + base.stages[1:])
    assert conv_16.arch_id == base.arch_id


def test_qkv_bias_is_written_only_when_off_so_earlier_ids_stand():
    base = coatnet_like()
    assert all("qkv_bias" not in stage for stage in base.to_dict()["stages"])
    # the id CoAtNet-0's canonical form had before the field existed (exported configs carry it)
    assert base.arch_id == "aa483ba09394525b"
    no_bias = base.replace(stages=base.stages[:3] + (Stage("T", 2, 768, qkv_bias=False),))
    assert no_bias.to_dict()["stages"][3]["qkv_bias"] is False
    assert no_bias.arch_id != base.arch_id
    assert Architecture.from_yaml(no_bias.to_yaml()) == no_bias
    # meaningless outside T and A: normalised, one network one id
    assert Stage("C", 2, 96, qkv_bias=False) == Stage("C", 2, 96)
    assert Stage("G", 2, 96, head_size=48, qkv_bias=False) == Stage("G", 2, 96, head_size=48)
    with pytest.raises(ArchitectureError, match=r"stages\[0\]\.qkv_bias"):
        Architecture.from_dict({**base.to_dict(), "stages": [
            {"block": "T", "depth": 1, "width": 96, "qkv_bias": "no"}, *base.to_dict()["stages"][1:]]})


def test_exported_config_with_metrics_loads():
    arch = coatnet_like()
    text = json.dumps({"architecture": arch.to_dict(), "metrics": {"val_acc": 0.9}})
    assert Architecture.from_yaml(text) == arch


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][0].update(block="X"), "stages[0].block"),
    (lambda d: d["stages"][1].update(depth=0), "stages[1].depth"),
    (lambda d: d["stages"][2].update(width=100), "stages[2].width"),  # 100 % 32 != 0
    (lambda d: d["stages"][2].update(stride=3), "stages[2].stride"),
    (lambda d: d["stages"][0].update(depth="2"), "stages[0].depth"),
    (lambda d: d["stages"][0].update(colour="red"), "stages[0].colour"),
    (lambda d: d["stages"][0].pop("width"), "stages[0].width"),
    (lambda d: d.update(resolution=100), "resolution"),  # 100 % 32 != 0
    (lambda d: d.update(head="cls"), "head"),
    (lambda d: d.update(head="token"), "head"),  # no A stage for the class token
    (lambda d: d["stem"].update(kind="conv7"), "stem.kind"),
    (lambda d: d.update(stages=[]), "stages"),
    (lambda d: d["stages"][0].update(pos_embed=True), "stages[0].pos_embed"),
])
def test_bad_description_names_the_field(mutate, field):
    data = coatnet_like().to_dict()
    mutate(data)
    with pytest.raises(ArchitectureError) as info:
        Architecture.from_dict(data)
    assert info.value.field == field
    assert field in str(info.value)


def test_malformed_yaml_is_an_architecture_error():
    with pytest.raises(ArchitectureError, match="not valid YAML"):
        Architecture.from_yaml("stages: [block: C\n")
    with pytest.raises(ArchitectureError, match="expected a mapping"):
        Architecture.from_yaml("- just a list")


def test_token_head_requires_trailing_stride_one_attention():
    stem = Stem("patch", 192, 16)
    ok = Architecture(stem, (Stage("G", 10, 192, 1, 48), Stage("A", 2, 192, 1, 48)), head="token")
    assert ok.layout == "G-A"
    with pytest.raises(ArchitectureError, match="stages\\[1\\]"):
        Architecture(stem, (Stage("A", 10, 192, 1, 48), Stage("T", 2, 192, 1, 48)), head="token")
