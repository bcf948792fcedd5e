"""The architectures plexray builds have exactly the tensors of the real released checkpoints."""

from __future__ import annotations

import pytest
import torch

from plexray.model import architectures, layout
from plexray.model.architectures import build_lm
from moshi.models import loaders

from repo_paths import REFERENCE_DIR


def read_keys(name: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (REFERENCE_DIR / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(d) for d in shape.strip("[]").split(","))
    return shapes


@pytest.mark.parametrize("family, keys_file", [
    ("personaplex", "personaplex-7b-v1.lm-keys.tsv"),
    ("moshi", "moshiko-pytorch-bf16.lm-keys.tsv"),
])
def test_full_lm_on_meta_matches_real_checkpoint_keys(family, keys_file):
    lm = build_lm(architectures.full_lm_kwargs(family), device="meta", dtype=torch.bfloat16)
    assert all(p.device.type == "meta" for p in lm.parameters())  # a 7B build allocates nothing
    assert layout.expected_release_shapes(lm) == read_keys(keys_file)


def test_personaplex_has_8_37b_parameters():
    lm = build_lm(architectures.full_lm_kwargs("personaplex"), device="meta")
    assert round(sum(p.numel() for p in lm.parameters()) / 1e9, 2) == 8.37


def test_full_mimi_matches_real_checkpoint_keys():
    with torch.device("meta"):
        mimi = loaders.get_mimi(None, architectures.full_mimi_config(), device="meta")
    assert layout.expected_shapes(mimi) == read_keys("mimi.keys.tsv")


def test_release_layout_round_trips_through_moshi_load_hook():
    kwargs = architectures.demo_lm_kwargs("personaplex", text_card=64)
    source = build_lm(kwargs, device="cpu")
    released = layout.to_release_layout(source.state_dict())
    assert any(k.endswith("self_attn.in_proj_weight") for k in released)
    assert not any(".in_projs." in k for k in released)
    target = build_lm(kwargs, device="meta")
    target.load_state_dict(released, strict=True, assign=True)
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), name
