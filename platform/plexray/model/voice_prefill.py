"""NVIDIA's voice prefill files (`.pt`): a voice prompt stepped once, saved, and replayed per session.

The layout, as NVIDIA/personaplex writes and reads it (`moshi/models/lm.py`:
`_step_voice_prompt_core`, `load_voice_prompt_embeddings`, `step_embeddings`):

    torch.save({"embeddings": E, "cache": C}, "NAME.pt")
    E [V-1, 1, 1, dim]  the transformer input of every step while the V voice frames were stepped;
                        the step at offset 0 runs no transformer, hence V - 1 of them
    C [1, 17, CT]       LMGen's token cache after the voice prompt: a ring of CT = max delay + 3
                        columns in which stream k of frame f sits at column (f + delay_k) % CT

Replay: E are the inputs of the first V - 1 transformer positions; the positions after them read
the voice's last two frames, which live in C. Every voice file of the real checkpoint is in this
layout, and `plexray voices make` writes it, so a voice made here works in NVIDIA's server too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import sphn
import torch

from plexray.errors import CheckpointError
from plexray.model.inputs import input_embeddings, transformer_inputs
from plexray.model.prompt import SAMPLE_RATE, PromptCodes, build_prompt_frames
from plexray.model.voices import encode_voice, normalize_loudness, read_voice_audio

NUM_STREAMS = 17


def cache_columns(delays: list[int]) -> int:
    """Width CT of LMGen's token ring (NVIDIA's `_init_streaming_state`)."""
    return max(delays) + 3


@dataclasses.dataclass(frozen=True)
class VoicePrefill:
    embeddings: torch.Tensor  # [V-1, dim] float32: transformer inputs of positions 0..V-2
    cache: torch.Tensor  # [17, CT] long: LMGen's token ring after the voice prompt

    @property
    def num_voice_frames(self) -> int:
        return self.embeddings.shape[0] + 1

    def last_frames(self, delays: list[int]) -> torch.Tensor:
        """Frames V-2 and V-1 of the voice prompt [17, 2], read out of the ring."""
        width = self.cache.shape[1]
        frames = torch.empty(NUM_STREAMS, 2, dtype=torch.long)
        for column, frame in enumerate((self.num_voice_frames - 2, self.num_voice_frames - 1)):
            for stream, delay in enumerate(delays):
                frames[stream, column] = self.cache[stream, (frame + delay) % width]
        return frames


def lmgen_token_cache(lm, frames: torch.Tensor) -> torch.Tensor:
    """The token ring [17, CT] that NVIDIA's LMGen holds after being stepped with `frames` [17, V].

    Each step at offset o writes stream k of its frame at column (o + delay_k) % CT, and while
    o <= delay_k it writes the stream's initial token at column o % CT (`prepare_step_input`).
    During a prompt every token is provided, so nothing the model samples lands in the ring.
    """
    delays = lm.delays
    width = cache_columns(delays)
    initial = lm._get_initial_token()[0, :, 0].cpu()
    cache = torch.full((NUM_STREAMS, width), lm.ungenerated_token_id, dtype=torch.long)
    for offset in range(frames.shape[1]):
        for stream, delay in enumerate(delays):
            cache[stream, (offset + delay) % width] = frames[stream, offset]
            if offset <= delay:
                cache[stream, offset % width] = initial[stream]
    return cache


@torch.no_grad()
def make_voice_prefill(lm, voice_codes: torch.Tensor, prompt_codes: PromptCodes) -> VoicePrefill:
    """What NVIDIA's `LMGen` saves after stepping the voice prompt `voice_codes` [8, V].

    The voice frames are laid out as in the prompt phase (text padding, the voice on the agent
    stream, the sine on the user stream); the transformer sees frames 1..V-1 (see prompt.py).
    """
    frames = build_prompt_frames(voice_codes, [], prompt_codes).codes[:, :voice_codes.shape[1]]
    frames = frames.to(lm.device)
    embeddings = input_embeddings(lm, transformer_inputs(lm, frames[None, :, 1:]))[0]  # [V-1, dim]
    return VoicePrefill(embeddings.float().cpu(), lmgen_token_cache(lm, frames.cpu()))


def write_voice_prefill(path: Path, prefill: VoicePrefill) -> None:
    steps, dim = prefill.embeddings.shape
    torch.save({"embeddings": prefill.embeddings.reshape(steps, 1, 1, dim).contiguous(),
                "cache": prefill.cache[None].contiguous()}, str(path))


def read_voice_prefill(path: Path, lm) -> VoicePrefill:
    """Read a `.pt` in NVIDIA's layout, checked against `lm`; any other content is a CheckpointError."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle or zip
        raise CheckpointError(f"{path}: cannot read voice prompt: {exc}") from None
    expected = (f"NVIDIA's voice layout {{'embeddings': [V-1, 1, 1, {lm.dim}], "
                f"'cache': [1, {NUM_STREAMS}, {cache_columns(lm.delays)}]}}")
    if not isinstance(data, dict) or not {"embeddings", "cache"} <= set(data):
        raise CheckpointError(f"{path}: not a voice prompt: expected {expected}")
    embeddings, cache = data["embeddings"], data["cache"]
    if not (isinstance(embeddings, torch.Tensor) and isinstance(cache, torch.Tensor)):
        raise CheckpointError(f"{path}: not a voice prompt: expected {expected}")
    shapes_fit = (embeddings.dim() == 4 and embeddings.shape[0] >= 1 and embeddings.shape[1:] == (1, 1, lm.dim)
                  and tuple(cache.shape) == (1, NUM_STREAMS, cache_columns(lm.delays))
                  and not cache.is_floating_point())
    if not shapes_fit:
        raise CheckpointError(f"{path}: embeddings {list(embeddings.shape)} and cache {list(cache.shape)} do not "
                              f"fit this model: expected {expected}")
    return VoicePrefill(embeddings.reshape(-1, lm.dim).float(), cache[0].long())


def make_voice_files(bundle, sample: Path, output_dir: Path) -> tuple[Path, Path]:
    """`plexray voices make`: NAME.pt in NVIDIA's layout and the -24 LUFS NAME.wav, from any audio file.

    The embeddings are computed in the LM's dtype, as NVIDIA's server computes them (bfloat16 for
    the real weights), so the file replays unchanged there and here.
    """
    if not bundle.spec.has_prompt_prefill:
        raise CheckpointError(f"{bundle.files.source}: family {bundle.family!r} has no voice prompt")
    samples = normalize_loudness(read_voice_audio(sample))
    output_dir.mkdir(parents=True, exist_ok=True)
    wav_path, pt_path = output_dir / f"{sample.stem}.wav", output_dir / f"{sample.stem}.pt"
    prefill = make_voice_prefill(bundle.lm, encode_voice(bundle.mimi, samples), bundle.prompt_codes)
    sphn.write_wav(str(wav_path), samples, SAMPLE_RATE)
    write_voice_prefill(pt_path, dataclasses.replace(prefill, embeddings=prefill.embeddings.to(bundle.lm.dtype)))
    return wav_path, pt_path
