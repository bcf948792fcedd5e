"""Architectures of the model families plexray runs, as keyword arguments for moshi's classes.

The real PersonaPlex repo's config.json carries no architecture, so the platform owns these
definitions. The demo architectures are the same classes at toy sizes: every code path (delays,
depformer steps, streaming state, Mimi codebooks) is the real one, only the widths shrink.
"""

from __future__ import annotations

import copy
import dataclasses
import typing as tp

import torch
from moshi.models import loaders
from moshi.models.lm import LMModel

Family = tp.Literal["personaplex", "moshi"]
FAMILIES: tuple[Family, ...] = ("personaplex", "moshi")

# Shared by every family: text stream first, then 8 agent then 8 user audio codebooks.
DELAYS = [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1]
NUM_AUDIO_CODEBOOKS = 8  # per speaker; codebook 0 is semantic, 1-7 acoustic
TEXT_PADDING_ID = 3
TEXT_END_OF_PADDING_ID = 0


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What differs between families beyond tensor sizes."""

    name: Family
    dep_q: int  # depformer steps: 8 (agent only) for moshi, 16 (agent + user) for personaplex
    has_prompt_prefill: bool  # PersonaPlex's voice + text prompt phase before the conversation
    default_hf_repo: str
    mimi_ring: str  # how streaming Mimi keeps its last 10 s: the moshi version its users compare with (mimi_ring.py)


FAMILY_SPECS: dict[str, FamilySpec] = {
    "personaplex": FamilySpec("personaplex", dep_q=16, has_prompt_prefill=True,
                              default_hf_repo="nvidia/personaplex-7b-v1", mimi_ring="moshi-0.1"),
    "moshi": FamilySpec("moshi", dep_q=8, has_prompt_prefill=False,
                        default_hf_repo="kyutai/moshiko-pytorch-bf16", mimi_ring="moshi-0.2"),
}


def family_spec(family: str) -> FamilySpec:
    try:
        return FAMILY_SPECS[family]
    except KeyError:
        raise ValueError(f"unknown model family {family!r}; expected one of {sorted(FAMILY_SPECS)}") from None


def full_lm_kwargs(family: str) -> dict:
    """The 7B LM configuration of a family (moshi 0.2.13's Moshi 7B, with dep_q set per family)."""
    kwargs = copy.deepcopy(loaders._lm_kwargs)
    kwargs["dep_q"] = family_spec(family).dep_q
    return kwargs


def full_mimi_config() -> dict:
    """The real Mimi codec configuration (24 kHz, 12.5 Hz, 32 quantizers of which 8 are used)."""
    return copy.deepcopy(loaders._mimi_config)


def demo_lm_kwargs(family: str, text_card: int) -> dict:
    """A toy LM with the real structure that steps in a few milliseconds on one CPU core."""
    kwargs = full_lm_kwargs(family)
    kwargs.update(
        dim=128,
        text_card=text_card,
        num_heads=4,
        num_layers=2,
        hidden_scale=4.125,
        context=3000,  # the real ring-buffer length, so context overflow behaves as in production
        depformer_dim=64,
        depformer_dim_feedforward=int(4.125 * 64),
        depformer_num_heads=4,
        depformer_num_layers=2,
    )
    return kwargs


def demo_mimi_config() -> dict:
    """A toy Mimi: same SEANet strides (1920 samples per frame), narrow convolutions and transformers."""
    config = full_mimi_config()
    config["seanet"].update(n_filters=8, dimension=64)
    config["quantizer"].update(dimension=32, n_q=8, input_dimension=64, output_dimension=64)
    config["transformer"].update(
        d_model=64, num_heads=4, num_layers=1, dim_feedforward=128,
        input_dimension=64, output_dimensions=[64],
    )
    return config


def build_lm(lm_kwargs: dict, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32,
             **overrides: tp.Any) -> LMModel:
    """Instantiate the LM (on the meta device by default: no memory)."""
    return LMModel(device=device, dtype=dtype, **(lm_kwargs | overrides))
