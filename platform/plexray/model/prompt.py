"""PersonaPlex's prompt phase, in one place: the frames the model sees before the conversation.

Order, one 80 ms frame per step (SPEC section 3):
    voice prompt  | agent audio = Mimi codes of the voice sample      | text = padding
    silence 0.5 s | agent audio = Mimi codes of silence                | text = padding
    text prompt   | agent audio = silence codes                       | text = one prompt token per frame
    silence 0.5 s | agent audio = silence codes                       | text = padding
and throughout, the user audio stream carries the Mimi codes of a 440 Hz sine.

NVIDIA's generator (`LMGen.step` in NVIDIA/personaplex) consumes the first frame it is stepped
with without running the transformer: its step at offset 0 only fills the token cache, and the
cache slots of that frame then hold the initial tokens. So the model never sees frame 0 of the
prompt, and a prompt of P frames takes P - 1 transformer positions. `PromptFrames.model_codes`
is the prompt as the model sees it (frames 1..P-1); the data pipeline lays training conversations
out with it (and masks it from the loss) and the serving engine prefills sessions with it, so
both match NVIDIA's inference token for token.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS, TEXT_PADDING_ID

SAMPLE_RATE = 24000
FRAME_RATE = 12.5
FRAME_SAMPLES = 1920  # 80 ms at 24 kHz
SILENCE_FRAMES = int(0.5 * FRAME_RATE)  # 0.5 s of silence between prompt parts
SYSTEM_TAG = "<system>"

# NVIDIA's constants, valid only for the real Mimi weights (tokenizer-e351c8d8-checkpoint125).
REAL_MIMI_SILENCE_CODES = [948, 243, 1178, 546, 1736, 1030, 1978, 2008]
REAL_MIMI_SINE_CODES = [430, 1268, 381, 1611, 1095, 1495, 56, 472]


@dataclasses.dataclass(frozen=True)
class PromptCodes:
    """Mimi codes of one frame of silence and one frame of a 440 Hz sine, for a given Mimi."""

    silence: tuple[int, ...]  # [8]
    sine: tuple[int, ...]  # [8]

    @classmethod
    def real_mimi(cls) -> "PromptCodes":
        return cls(tuple(REAL_MIMI_SILENCE_CODES), tuple(REAL_MIMI_SINE_CODES))

    def to_json(self) -> dict:
        return {"silence": list(self.silence), "sine": list(self.sine)}

    @classmethod
    def from_json(cls, data: dict) -> "PromptCodes":
        return cls(tuple(int(c) for c in data["silence"]), tuple(int(c) for c in data["sine"]))


def sine_wave(num_samples: int, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(num_samples, dtype=np.float64) / SAMPLE_RATE
    return (amplitude * np.sin(2 * math.pi * frequency * t)).astype(np.float32)


@torch.no_grad()
def derive_prompt_codes(mimi) -> PromptCodes:
    """Encode 1 s of silence and of a 440 Hz sine, keeping the last (steady-state) frame's codes.

    Needed for any Mimi other than the real one, whose codes NVIDIA hard-coded.
    """
    num_samples = 12 * FRAME_SAMPLES
    device = next(mimi.parameters()).device
    batch = torch.from_numpy(np.stack([np.zeros(num_samples, np.float32), sine_wave(num_samples)]))
    codes = mimi.encode(batch[:, None].to(device))  # [2, 8, 12]
    silence, sine = codes[0, :, -1].tolist(), codes[1, :, -1].tolist()
    return PromptCodes(tuple(silence), tuple(sine))


def wrap_system_prompt(text: str) -> str:
    """PersonaPlex wraps the role prompt with the same tag at both ends."""
    text = text.strip()
    if text.startswith(SYSTEM_TAG) and text.endswith(SYSTEM_TAG) and len(text) > 2 * len(SYSTEM_TAG):
        return text
    return f"{SYSTEM_TAG} {text} {SYSTEM_TAG}"


@dataclasses.dataclass(frozen=True)
class PromptFrames:
    """The prompt phase as LM input codes, with where each part starts."""

    codes: torch.Tensor  # [17, T] long: text, 8 agent codebooks, 8 user codebooks
    voice_frames: int
    text_start: int  # first frame of the forced text tokens
    text_frames: int

    @property
    def num_frames(self) -> int:
        return self.codes.shape[1]

    @property
    def model_codes(self) -> torch.Tensor:
        """[17, P - 1]: the frames the transformer reads (NVIDIA's generator swallows frame 0)."""
        return self.codes[:, 1:]


def build_prompt_frames(
    voice_codes: torch.Tensor | None,
    text_token_ids: list[int],
    prompt_codes: PromptCodes,
) -> PromptFrames:
    """Lay out the prompt phase. `voice_codes` is [8, Tv] (agent voice sample) or None (no voice)."""
    num_voice = 0 if voice_codes is None else voice_codes.shape[1]
    num_text = len(text_token_ids)
    total = num_voice + SILENCE_FRAMES + num_text + SILENCE_FRAMES
    silence = torch.tensor(prompt_codes.silence, dtype=torch.long)[:, None]
    sine = torch.tensor(prompt_codes.sine, dtype=torch.long)[:, None]

    codes = torch.empty(1 + 2 * NUM_AUDIO_CODEBOOKS, total, dtype=torch.long)
    codes[0] = TEXT_PADDING_ID
    codes[1:1 + NUM_AUDIO_CODEBOOKS] = silence.expand(-1, total)
    codes[1 + NUM_AUDIO_CODEBOOKS:] = sine.expand(-1, total)
    if voice_codes is not None:
        if voice_codes.shape[0] != NUM_AUDIO_CODEBOOKS:
            raise ValueError(f"voice codes must be [{NUM_AUDIO_CODEBOOKS}, T], got {list(voice_codes.shape)}")
        codes[1:1 + NUM_AUDIO_CODEBOOKS, :num_voice] = voice_codes.long()
    text_start = num_voice + SILENCE_FRAMES
    codes[0, text_start:text_start + num_text] = torch.tensor(text_token_ids, dtype=torch.long)
    return PromptFrames(codes=codes, voice_frames=num_voice, text_start=text_start, text_frames=num_text)
