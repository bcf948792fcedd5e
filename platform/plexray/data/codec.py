"""The parts of a checkpoint the data pipeline needs (Mimi, tokenizer, prompt codes) and batched encoding.

Only these are loaded, never the LM: a 7B LM in every encoding actor would waste a GPU's memory.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
import sentencepiece
import torch

from plexray.model import loader, reference
from plexray.model.compile import set_torch_compile
from plexray.model.config import ModelConfig
from plexray.model.prompt import FRAME_SAMPLES, PromptCodes, derive_prompt_codes


@dataclasses.dataclass
class Codec:
    mimi: tp.Any  # moshi MimiModel with 8 codebooks
    tokenizer: sentencepiece.SentencePieceProcessor
    prompt_codes: PromptCodes

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)


def load_codec(model: ModelConfig, device: str = "cpu") -> Codec:
    set_torch_compile(model.compile)
    files = reference.resolve(model.checkpoint, model.cache_dir)
    config = loader.read_checkpoint_config(files, model.family, model.lm_config, model.mimi_config)
    mimi = loader.load_mimi(files.mimi, config.mimi_config, device)
    tokenizer = loader.load_tokenizer(files.tokenizer, config.lm_kwargs["text_card"])
    return Codec(mimi, tokenizer, config.prompt_codes or derive_prompt_codes(mimi))


def num_frames(num_samples: int) -> int:
    return math.ceil(num_samples / FRAME_SAMPLES)


@torch.no_grad()
def encode_waves(mimi, waves: tp.Sequence[np.ndarray]) -> list[torch.Tensor]:
    """Encode mono 24 kHz waves of any lengths in one batch; returns [8, ceil(len / 1920)] per wave.

    Waves are zero-padded at the end to the longest; Mimi is causal, so padding after a wave
    does not change its frames.
    """
    frames = [num_frames(len(w)) for w in waves]
    batch = np.zeros((len(waves), 1, max(frames) * FRAME_SAMPLES), np.float32)
    for index, wave in enumerate(waves):
        batch[index, 0, :len(wave)] = wave
    device = next(mimi.parameters()).device
    codes = mimi.encode(torch.from_numpy(batch).to(device)).cpu()  # [B, 8, max(frames)]
    return [codes[index, :, :count] for index, count in enumerate(frames)]
