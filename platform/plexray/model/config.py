"""The `model` config section: which checkpoint to load, and how."""

from __future__ import annotations

import typing as tp

import pydantic
import torch

from plexray.config import StrictModel

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelConfig(StrictModel):
    """Which checkpoint to load, and on which device, in which dtype."""

    checkpoint: str = pydantic.Field(
        "demo", description="hf://owner/repo[@revision], a local checkpoint directory, or 'demo' "
                            "(the built-in randomly initialised demo checkpoint)")
    family: tp.Literal["personaplex", "moshi"] | None = pydantic.Field(
        None, description="model family; default: from the checkpoint's config or repo name")
    dtype: tp.Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = pydantic.Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    cache_dir: str | None = pydantic.Field(None, description="Hugging Face cache dir (default: HF_HOME)")
    compile: bool = pydantic.Field(
        False, description="torch.compile moshi's kernels (rope, gating, norms) in every process that loads this model "
                           "(training, data encoding, serving): the one compile switch. Works on CPU too, where each "
                           "new shape costs seconds of compilation")
    lm_config: dict | None = pydantic.Field(
        None, description="LM architecture (moshi LMModel arguments) for a checkpoint whose config.json carries "
                          "none; default: the family's released architecture (nvidia/personaplex-7b-v1's config.json "
                          "has none, and plexray supplies it)")
    mimi_config: dict | None = pydantic.Field(
        None, description="Mimi architecture (moshi's Mimi config) for a checkpoint that records none; default: "
                          "the released Mimi")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def load(self, **lm_overrides: tp.Any):
        from plexray.model.loader import load_model

        return load_model(self.checkpoint, family=self.family, device=self.device, dtype=self.torch_dtype,
                          cache_dir=self.cache_dir, compile=self.compile, lm_config=self.lm_config,
                          mimi_config=self.mimi_config, **lm_overrides)
