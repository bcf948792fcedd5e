"""A session's prompt phase as transformer inputs, ready to prefill in chunks.

The layout comes from `plexray.model.prompt.build_prompt_frames` (voice, silence, forced text
tokens, silence; sine on the user stream). The voice part comes from the voice's `.pt` when it
has one (its per-frame embeddings are replayed as the transformer inputs of the first positions,
and its token cache supplies the last voice frames the next positions read), else from the Mimi
codes of its `.wav`, encoded once when the engine starts.
"""

from __future__ import annotations

import dataclasses
import threading

import torch

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.demo import input_embeddings, transformer_inputs
from plexray.model.loader import ModelBundle
from plexray.model.prompt import PromptFrames, build_prompt_frames, wrap_system_prompt
from plexray.serve.engine.errors import SessionSettingsError


@dataclasses.dataclass(frozen=True)
class PromptPlan:
    """What a joining session prefills: positions 0..P-1, then its first live step reads `last_columns`."""

    embeddings: torch.Tensor  # [P, dim] transformer inputs of positions 0..P-1
    last_columns: torch.Tensor  # [17, 2] prompt columns P-2, P-1 (all streams)
    frames: PromptFrames | None  # the layout (None: a family without a prompt phase)
    voice_source: str  # "pt", "wav" or "none"

    @property
    def num_frames(self) -> int:
        return self.embeddings.shape[0]


class PromptPlanner:
    """Builds PromptPlans for one model; caches each voice's codes or `.pt` on first use."""

    def __init__(self, bundle: ModelBundle, max_prompt_frames: int):
        self.bundle = bundle
        self.max_prompt_frames = max_prompt_frames
        self._lock = threading.Lock()
        self._voice_pt: dict[str, dict[str, torch.Tensor]] = {}
        # Voices with only a .wav: encode now, while Mimi is not yet streaming for the engine.
        self._voice_codes: dict[str, torch.Tensor] = {
            name: _encode_voice(bundle, voice.load_wav())
            for name, voice in bundle.voices.items() if voice.pt_path is None and voice.wav_path is not None}

    @torch.no_grad()
    def plan(self, text_prompt: str, voice: str | None) -> PromptPlan:
        lm = self.bundle.lm
        if not self.bundle.spec.has_prompt_prefill:  # Moshi: the conversation starts at position 0
            return PromptPlan(torch.zeros(0, lm.dim, dtype=lm.dtype, device=lm.device),
                              torch.zeros(lm.num_codebooks, 2, dtype=torch.long), None, "none")
        text_ids = self.bundle.tokenizer.encode(wrap_system_prompt(text_prompt)) if text_prompt.strip() else []
        voice_codes, voice_pt, source = self._voice(voice)
        frames = build_prompt_frames(voice_codes, text_ids, self.bundle.prompt_codes)
        if frames.num_frames > self.max_prompt_frames:
            raise SessionSettingsError(
                f"prompt too long: voice {frames.voice_frames} + text {frames.text_frames} frames + silence = "
                f"{frames.num_frames} frames, the engine allows {self.max_prompt_frames}")
        codes = frames.codes.to(lm.device)
        embeddings = input_embeddings(lm, transformer_inputs(lm, codes[None]))[0]  # [P, dim]
        if voice_pt is not None:
            embeddings[:frames.voice_frames] = voice_pt["embeddings"].to(embeddings)
        return PromptPlan(embeddings, frames.codes[:, -2:], frames, source)

    def _voice(self, voice: str | None) -> tuple[torch.Tensor | None, dict | None, str]:
        """Voice codes [8, Tv] for the layout (from the .pt cache when replaying), the .pt, the source."""
        if voice is None:
            return None, None, "none"
        if voice not in self.bundle.voices:
            raise SessionSettingsError(f"unknown voice {voice!r}; this model has {sorted(self.bundle.voices) or 'none'}")
        if voice in self._voice_codes:
            return self._voice_codes[voice], None, "wav"
        with self._lock:
            if voice not in self._voice_pt:
                self._voice_pt[voice] = self.bundle.voices[voice].load_embeddings()
        data = self._voice_pt[voice]
        num_frames, cache = data["embeddings"].shape[0], data["cache"]
        if data["embeddings"].shape[1] != self.bundle.lm.dim or cache.shape[0] != self.bundle.lm.num_codebooks:
            raise SessionSettingsError(
                f"voice {voice!r}: .pt embeddings {list(data['embeddings'].shape)} / cache {list(cache.shape)} "
                f"do not fit this model (dim {self.bundle.lm.dim}, {self.bundle.lm.num_codebooks} streams)")
        # Only the voice frames that later positions read matter: the cache's last columns.
        codes = torch.zeros(NUM_AUDIO_CODEBOOKS, num_frames, dtype=torch.long)
        kept = min(cache.shape[1], num_frames)
        codes[:, num_frames - kept:] = cache[1:1 + NUM_AUDIO_CODEBOOKS, cache.shape[1] - kept:]
        return codes, data, "pt"


@torch.no_grad()
def _encode_voice(bundle: ModelBundle, samples) -> torch.Tensor:
    audio = torch.from_numpy(samples)[None, None].to(next(bundle.mimi.parameters()).device)
    return bundle.mimi.encode(audio)[0].cpu()  # [8, Tv]
