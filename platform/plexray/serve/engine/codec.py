"""Mimi in streaming mode over B slots: one batched encode and one batched decode per tick.

Each slot's convolution and transformer state is reset when a session takes the slot, and
only the slots named in the mask advance (moshi's exec mask), so slots never disturb each other.
"""

from __future__ import annotations

import numpy as np
import torch
from moshi.models.compression import MimiModel

from plexray.model.prompt import FRAME_SAMPLES


class BatchedMimi:
    def __init__(self, mimi: MimiModel, batch_size: int):
        self.mimi = mimi
        self.batch_size = batch_size
        self.device = next(mimi.parameters()).device
        self._streaming = mimi.streaming(batch_size)

    def close(self) -> None:
        self._streaming.close()

    def reset_slot(self, slot: int) -> None:
        mask = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        mask[slot] = True
        self.mimi.reset_streaming(mask)

    @torch.no_grad()
    def encode(self, pcm: np.ndarray, slots: torch.Tensor) -> torch.Tensor:
        """User audio [B, 1920] -> codes [B, 8]; only the `slots` [B] that are True advance."""
        assert pcm.shape == (self.batch_size, FRAME_SAMPLES), pcm.shape
        self.mimi.set_exec_mask(slots)
        audio = torch.from_numpy(pcm).to(self.device)[:, None]  # [B, 1, 1920]
        return self.mimi.encode(audio)[:, :, 0]

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, slots: torch.Tensor) -> np.ndarray:
        """Agent codes [B, 8] -> audio [B, 1920] float32; only the `slots` [B] that are True advance."""
        self.mimi.set_exec_mask(slots)
        audio = self.mimi.decode(codes.clamp(min=0)[:, :, None].to(self.device))  # [B, 1, 1920]
        return audio[:, 0].float().cpu().numpy()
