"""The `data.ingest` config section: how recorded conversations are transcribed, checked and prompted."""

from __future__ import annotations

import pydantic

from plexray.config import StrictModel
from plexray.speech.asr import ASRConfig


class IngestConfig(StrictModel):
    """`plexray data ingest`: ASR actors, the speech-ratio gate, prompts for recordings that come without."""

    asr: ASRConfig = pydantic.Field(default_factory=ASRConfig, description="speech recognition of each channel")
    num_actors: int = pydantic.Field(1, ge=1, description="ASR actors (each holds one recogniser)")
    num_cpus_per_actor: float = pydantic.Field(1.0, gt=0)
    num_gpus_per_actor: float = pydantic.Field(
        0.0, ge=0, description="GPU share per ASR actor (whisper backend; pocketsphinx is CPU only)")
    batch_size: int = pydantic.Field(4, ge=1, description="conversations per ASR actor batch")
    # 0.05: each speaker of a real two-party call talks 20-50% of the time; a channel with less than 5%
    # speech is a dead microphone, a one-sided recording or a channel holding only the other side's bleed.
    min_speech_ratio: float = pydantic.Field(
        0.05, ge=0, le=1, description="a conversation is rejected when either channel has less speech (Silero VAD) "
                                      "than this fraction of its duration")
    voice_prompt_s: float = pydantic.Field(
        10.0, gt=0, description="length of the voice prompt taken from the agent channel when the index gives none: the "
                                "window this long holding the most agent speech while the user is silent")
    default_system_prompt: str | None = pydantic.Field(
        None, description="role prompt for conversations the index gives none; None: back-annotated by the LLM "
                          "(data.dialogue.llm), and the run refuses to start if no LLM endpoint is configured")
    # Mimi encodes a whole conversation in one pass (attention over all its steps): 300 s needs ~2 GB per
    # conversation on CPU; training cuts rows into train.max_frames windows anyway.
    max_duration_s: float = pydantic.Field(
        300.0, gt=0, description="recordings are cut here (the rest is not transcribed nor encoded)")

    @pydantic.model_validator(mode="after")
    def _gpu_needs_whisper(self) -> "IngestConfig":
        if self.num_gpus_per_actor > 0 and (self.asr.backend != "whisper" or self.asr.whisper.device == "cpu"):
            raise ValueError("num_gpus_per_actor > 0 reserves a GPU that the ASR would leave idle: pocketsphinx and "
                             "whisper on device cpu run on CPU only; set asr.backend: whisper (device auto or cuda)")
        return self
