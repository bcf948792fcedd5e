"""What the temporal transformer reads at each position: the delay / initial-token rule, in one place.

Frames (80 ms columns of 17 tokens: text, 8 agent codebooks, 8 user codebooks) become transformer
positions like this, exactly as moshi's `LMModel.forward` does it for training:

    position s reads stream k from frame s - 1 - delay_k, or the stream's initial token when that
    frame index is negative.

So position 0 sees only initial tokens, and the acoustic codebooks (delay 1) lag the text and
semantic codebooks by one frame. Training (`LMModel.forward`), prompt prefill and the live
streaming step all read frames through `source_frames`, so the three agree by construction.
"""

from __future__ import annotations

import torch


def source_frames(positions: torch.Tensor, delays: torch.Tensor) -> torch.Tensor:
    """Frame index that each stream reads at each position: [..., 17] long, negative = initial token.

    `positions` [...] long (any shape), `delays` [17] long.
    """
    return positions[..., None] - 1 - delays


def transformer_inputs(lm, frames: torch.Tensor) -> torch.Tensor:
    """Input tokens [B, 17, T] of positions 0..T-1 for `frames` [B, 17, T]."""
    batch, _, num_frames = frames.shape
    delays = torch.tensor(lm.delays, device=frames.device)
    initial = lm._get_initial_token().to(frames.device)[0, :, 0]  # [17]
    source = source_frames(torch.arange(num_frames, device=frames.device), delays).T  # [17, T]
    picked = frames.gather(2, source.clamp(min=0)[None].expand(batch, -1, -1))
    return torch.where(source[None] < 0, initial[None, :, None], picked)


def input_embeddings(lm, tokens: torch.Tensor) -> torch.Tensor:
    """Transformer input [B, T, dim] of input tokens [B, 17, T]: the sum of the 17 stream embeddings.

    Summed in the order of moshi's `LMModel.forward_text` (audio codebooks, then text), so a
    prefilled position gets bit-identical input to a stepped one.
    """
    embeddings = None
    for k in range(lm.num_audio_codebooks):
        audio = lm.emb[k](tokens[:, k + lm.audio_offset])
        embeddings = audio if embeddings is None else embeddings + audio
    text = lm.text_emb(tokens[:, 0])
    return text if embeddings is None else embeddings + text
