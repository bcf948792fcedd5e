"""A session's prompt phase as transformer inputs, ready to prefill in chunks.

The layout comes from `plexray.model.prompt.build_prompt_frames` (voice, silence, forced text
tokens, silence; sine on the user stream), and the model reads it as NVIDIA's generator does:
frames 1..P-1 (`PromptFrames.model_codes`). The voice part comes from the voice's `.pt` when it
has one (NVIDIA's prefill: its saved embeddings are the inputs of the first positions, and its
token ring supplies the last voice frames that the next positions read), else from the Mimi codes
of its `.wav`. Every voice is read or encoded once, when the engine starts: a join only
assembles tensors, in two steps: `layout` (tokenizer and frame codes on the CPU, where a bad voice
or a prompt too long is refused) and `embed` (the work on the model's device).
"""

from __future__ import annotations

import dataclasses

import torch

from plexray.model.inputs import input_embeddings, transformer_inputs
from plexray.model.loader import ModelBundle
from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.prompt import PromptFrames, build_prompt_frames, wrap_system_prompt
from plexray.model.voice_prefill import VoicePrefill, read_voice_prefill
from plexray.model.voices import encode_voice
from plexray.serve.engine.errors import SessionSettingsError


@dataclasses.dataclass(frozen=True)
class PromptLayout:
    """A session's prompt before any device work: the model's input codes and the voice that supplies them."""

    frames: PromptFrames | None  # None: a family without a prompt phase
    prefill: VoicePrefill | None  # the voice's .pt, whose embeddings replace the first positions' inputs
    voice_source: str  # "pt", "wav" or "none"

    @property
    def num_frames(self) -> int:
        """Transformer positions the prompt takes (its plan's num_frames)."""
        return 0 if self.frames is None else self.frames.model_codes.shape[1]


@dataclasses.dataclass(frozen=True)
class PromptPlan:
    """What a joining session prefills: positions 0..P-1, then its first live step reads `last_columns`."""

    embeddings: torch.Tensor  # [P, dim] transformer inputs of positions 0..P-1
    last_columns: torch.Tensor  # [17, 2] the model frames P-2, P-1 (all streams)
    frames: PromptFrames | None  # the layout (None: a family without a prompt phase)
    voice_source: str  # "pt", "wav" or "none"

    @property
    def num_frames(self) -> int:
        return self.embeddings.shape[0]


class PromptPlanner:
    """Builds PromptPlans for one model from voices prepared once, at construction."""

    def __init__(self, bundle: ModelBundle, max_prompt_frames: int):
        self.bundle = bundle
        self.max_prompt_frames = max_prompt_frames
        self._prefills: dict[str, VoicePrefill] = {}
        self._voice_codes: dict[str, torch.Tensor] = {}  # [8, V] of voices that have only a .wav
        if not bundle.spec.has_prompt_prefill:
            return
        for name, voice in bundle.voices.items():
            if voice.pt_path is not None:
                self._prefills[name] = read_voice_prefill(voice.pt_path, bundle.lm)
            elif voice.wav_path is not None:  # encoded now, while Mimi is not yet streaming for the engine
                self._voice_codes[name] = encode_voice(bundle.mimi, voice.load_wav())

    def plan(self, text_prompt: str, voice: str | None) -> PromptPlan:
        return self.embed(self.layout(text_prompt, voice))

    def layout(self, text_prompt: str, voice: str | None) -> PromptLayout:
        """The prompt's frames (CPU only); raises SessionSettingsError for an unknown voice or a prompt too long."""
        if not self.bundle.spec.has_prompt_prefill:  # Moshi: the conversation starts at position 0
            return PromptLayout(None, None, "none")
        text_ids = self.bundle.tokenizer.encode(wrap_system_prompt(text_prompt)) if text_prompt.strip() else []
        prefill = self._prefills.get(voice) if voice is not None else None
        if voice is None:
            voice_codes, source = None, "none"
        elif prefill is not None:  # only the last two voice frames are read as tokens: they come from the ring
            voice_codes, source = torch.zeros(NUM_AUDIO_CODEBOOKS, prefill.num_voice_frames, dtype=torch.long), "pt"
        elif voice in self._voice_codes:
            voice_codes, source = self._voice_codes[voice], "wav"
        else:
            raise SessionSettingsError(f"unknown voice {voice!r}; this model has {sorted(self.bundle.voices) or 'none'}")
        frames = build_prompt_frames(voice_codes, text_ids, self.bundle.prompt_codes)
        if frames.num_frames > self.max_prompt_frames:
            raise SessionSettingsError(
                f"prompt too long: voice {frames.voice_frames} + text {frames.text_frames} frames + silence = "
                f"{frames.num_frames} frames, the engine allows {self.max_prompt_frames}")
        if prefill is not None:
            frames.codes[:, frames.voice_frames - 2:frames.voice_frames] = prefill.last_frames(self.bundle.lm.delays)
        return PromptLayout(frames, prefill, source)

    @torch.no_grad()
    def embed(self, layout: PromptLayout) -> PromptPlan:
        """The transformer inputs of a laid-out prompt, on the model's device."""
        lm = self.bundle.lm
        frames, prefill = layout.frames, layout.prefill
        if frames is None:
            return PromptPlan(torch.zeros(0, lm.dim, dtype=lm.dtype, device=lm.device),
                              torch.zeros(lm.num_codebooks, 2, dtype=torch.long), None, "none")
        model_codes = frames.model_codes.to(lm.device)
        embeddings = input_embeddings(lm, transformer_inputs(lm, model_codes[None]))[0]  # [P, dim]
        if prefill is not None:
            embeddings[:prefill.embeddings.shape[0]] = prefill.embeddings.to(embeddings)
        return PromptPlan(embeddings, frames.model_codes[:, -2:], frames, layout.voice_source)
