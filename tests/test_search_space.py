"""Search spaces: YAML loading and validation, define-by-run sampling, membership, size."""

import dataclasses
import itertools

import optuna
import pytest
import torch
import yaml

from search_spaces.architecture import Architecture, Stage, Stem
from search_spaces.space import (
    SearchSpace,
    SearchSpaceError,
    default_space,
    sample_architecture,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[Architecture]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    for _ in range(n):
        trial = study.ask()
        archs.append(sample_architecture(trial, space))
        study.tell(trial, 0.0)
    return archs


def test_default_space_layouts_are_the_papers_four():
    space = default_space()
    assert space.layouts() == ("C-C-C-C", "C-C-C-T", "C-C-T-T", "C-T-T-T")


def test_rule_off_admits_attention_before_convolution():
    data = default_space().to_dict()
    data["rules"]["conv_before_attention"] = False
    space = SearchSpace.from_dict(data)
    assert "C-T-C-T" in space.layouts()
    assert len(space.layouts()) == 8


def test_size_equals_brute_force_enumeration():
    data = {"resolution": 16, "in_channels": 1, "num_classes": 10,
            "stem": {"kind": ["conv", "patch"], "width": [8, 16], "patch_size": [2, 4]},
            "stages": [{"block": ["C", "T"], "depth": [1, 2], "width": [16], "head_size": [8, 16]},
                       {"block": ["C", "A"], "depth": [1, 1], "width": [16, 32],
                        "head_size": [16], "expansion": [2, 4]}]}
    space = SearchSpace.from_dict(data)
    # Enumerate every assignment of every parameter and keep the distinct members.
    members = set()
    for kind, width, patch in itertools.product(["conv", "patch"], [8, 16], [2, 4]):
        for b1, d1, h1, b2, w2, e2 in itertools.product("CT", [1, 2], [8, 16], "CA", [16, 32], [2, 4]):
            if (b1, b2) == ("T", "C"):  # attention before convolution: the rule excludes it
                continue
            stages = (Stage(b1, d1, 16, 2, h1, 4, False), Stage(b2, 1, w2, 2, 16, e2, b2 == "A"))
            arch = Architecture(Stem(kind, width, patch if kind == "patch" else 16), stages,
                                resolution=16, in_channels=1, num_classes=10)
            assert space.contains(arch), space.explain(arch)
            members.add(arch.arch_id)
    # by hand: stems 2 (conv) + 2*2 (patch) = 6; layouts C-C and C-A: 2 depths x 4 (S2 widths x
    # expansions) each; T-A: 2 depths x 2 heads x 4. Per stem 8 + 8 + 16 = 32.
    assert space.size() == len(members) == 6 * 32


def test_200_sampled_architectures_are_members_and_build():
    from search_spaces.model import build_model

    space = default_space()
    archs = sample(space, 200)
    assert all(space.contains(a) for a in archs)
    assert len({a.layout for a in archs}) == 4
    distinct = {a.arch_id: a for a in archs}
    x = torch.randn(2, space.in_channels, space.resolution, space.resolution)
    for arch in distinct.values():
        model = build_model(arch).eval()
        with torch.no_grad():
            assert model(x).shape == (2, space.num_classes)


def test_hybrid_space_samples_every_block_type():
    space = SearchSpace.load("hybrid")
    archs = sample(space, 150, seed=1)
    blocks = {s.block for a in archs for s in a.stages}
    assert blocks == {"C", "T", "A", "G"}
    for arch in archs:
        for stage in arch.stages:
            assert stage.block == "C" or stage.width % stage.head_size == 0
            assert stage.pos_embed == (stage.block in "AG")


def test_explain_names_what_is_outside():
    space = default_space()
    arch = sample(space, 1)[0]
    assert space.explain(arch) is None
    too_deep = arch.replace(stages=(dataclasses.replace(arch.stages[0], depth=9),) + arch.stages[1:])
    assert "stages[0] (S1).depth 9" in space.explain(too_deep)
    assert "resolution" in space.explain(arch.replace(resolution=64))


def test_smallest_are_members_and_not_larger_than_samples():
    from evaluators.cost import count_cost

    space = default_space()
    smallest = space.smallest()
    assert all(space.contains(a) for a in smallest)
    floor = min(count_cost(a).flops for a in smallest)
    assert all(count_cost(a).flops >= floor for a in sample(space, 20, seed=3))


def test_round_trip_through_yaml(tmp_path):
    space = SearchSpace.load("hybrid")
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space.to_dict()))
    assert SearchSpace.load(path) == space


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["stages"][1].update(block=["C", "X"]), "stages[1] (S2).block"),
    (lambda d: d["stages"][2].update(width=[64, 80]), "stages[2] (S3).width"),   # 80 % 32
    (lambda d: d["stages"][0].update(depth=[0, 2]), "stages[0] (S1).depth"),
    (lambda d: d["stages"][0].update(depth=[3, 1]), "stages[0] (S1).depth"),
    (lambda d: d["stages"][0].update(stride=3), "stages[0] (S1).stride"),
    (lambda d: d["stages"][0].update(kernel=[3]), "stages[0] (S1).kernel"),
    (lambda d: d.update(resolution=36), "resolution"),  # 36 % 16
    (lambda d: d["stem"].update(kind=["conv", "hex"]), "stem.kind"),
    (lambda d: d["rules"].update(conv_before_attention="yes"), "rules.conv_before_attention"),
    (lambda d: d["stages"][1].update(width=[32, 32]), "stages[1] (S2).width"),
    (lambda d: d["stages"].__setitem__(0, {"block": ["T"], "width": [48], "head_size": [32]}),
     "stages[0] (S1).width"),
])
def test_bad_spec_names_stage_and_field(mutate, field):
    data = default_space().to_dict()
    mutate(data)
    with pytest.raises(SearchSpaceError) as info:
        SearchSpace.from_dict(data)
    assert info.value.field == field


def test_attention_only_stage_before_conv_with_rule_on_has_no_layout():
    data = default_space().to_dict()
    data["stages"][0] = {"block": ["T"], "width": [32], "head_size": [16], "stride": 1}
    data["stages"][1]["block"] = ["C"]
    with pytest.raises(SearchSpaceError, match="convolution before attention"):
        SearchSpace.from_dict(data)


def test_unknown_space_name_lists_the_builtin_ones():
    with pytest.raises(FileNotFoundError, match="digits"):
        SearchSpace.load("no-such-space")
