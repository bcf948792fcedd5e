"""The `data` config section: what to generate, how it sounds, how it is encoded and where it goes."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import StrictModel
from plexray.openai_compat import EndpointConfig
from plexray.data.ingest.config import IngestConfig

AlignmentName = tp.Literal["word", "onset", "uniform"]
PromptDetail = tp.Literal["brief", "standard", "detailed"]


class LibraryConfig(StrictModel):
    """Which persona and scenario files to read, and which entries of them to use."""

    persona_files: list[str] = pydantic.Field(
        default_factory=list, description="YAML persona files; empty: the built-in coffee-shop library")
    scenario_files: list[str] = pydantic.Field(
        default_factory=list, description="YAML scenario files; empty: the built-in coffee-shop library")
    personas: list[str] = pydantic.Field(default_factory=list, description="persona ids to use; empty: all")
    scenarios: list[str] = pydantic.Field(default_factory=list, description="scenario ids to use; empty: all")


class LLMConfig(EndpointConfig):
    """An OpenAI-compatible chat-completions endpoint (vLLM, gpt-oss-120b, ...)."""

    base_url: str | None = pydantic.Field(
        None, description="e.g. http://host:8000/v1; default: $PLEXRAY_LLM_BASE_URL")
    api_key_env: str = pydantic.Field("PLEXRAY_LLM_API_KEY", description="environment variable holding the key")
    model: str = "gpt-oss-120b"
    temperature: float = pydantic.Field(0.8, ge=0.0, le=2.0)
    max_tokens: int = pydantic.Field(2048, ge=16)
    timeout_s: float = pydantic.Field(120.0, gt=0)


class DialogueConfig(StrictModel):
    backend: tp.Literal["embedded", "llm"] = pydantic.Field(
        "embedded", description="embedded: seeded offline generator; llm: chat-completions endpoint")
    llm: LLMConfig = LLMConfig()
    min_turns: int = pydantic.Field(6, ge=2, description="validation: fewest turns a dialogue may have")
    max_turns: int = pydantic.Field(25, ge=2, description="validation: most turns a dialogue may have")
    first_speaker: tp.Literal["agent", "user"] = "agent"

    @pydantic.model_validator(mode="after")
    def _bounds(self) -> "DialogueConfig":
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) is above max_turns ({self.max_turns})")
        return self


class TimingConfig(StrictModel):
    """Floor-transfer offsets (next start minus previous end): an ex-Gaussian, see plexray/data/timing.py."""

    mu_ms: float = pydantic.Field(50.0, description="mean of the normal part: with sigma, where the peak is")
    sigma_ms: float = pydantic.Field(200.0, gt=0, description="spread of the normal part: how common overlaps are")
    tau_ms: float = pydantic.Field(200.0, gt=0, description="mean of the exponential part: the tail of slow answers")


TTSBackend = tp.Literal["espeak", "endpoint"]


class SpeechEndpointConfig(EndpointConfig):
    """An OpenAI-compatible speech endpoint: POST {base_url}/audio/speech (vLLM, Kokoro-FastAPI, OpenAI)."""

    model_config = pydantic.ConfigDict(frozen=True)  # hashable: it keys the cache of spoken texts (tts.py)

    base_url: str | None = pydantic.Field(
        None, description="e.g. http://host:8880/v1; default: $PLEXRAY_TTS_BASE_URL")
    api_key_env: str = pydantic.Field("PLEXRAY_TTS_API_KEY", description="environment variable holding the key")
    model: str = pydantic.Field("kokoro", description="the request's model (Kokoro-FastAPI: kokoro; OpenAI: tts-1)")
    response_format: tp.Literal["wav", "pcm"] = pydantic.Field(
        "wav", description="wav: PCM WAV at any rate; pcm: raw 16-bit little-endian mono at pcm_sample_rate")
    pcm_sample_rate: int = pydantic.Field(
        24000, gt=0, description="rate of raw pcm answers (OpenAI and Kokoro-FastAPI: 24000)")


class SpeakerTTSConfig(StrictModel):
    """Who speaks one channel: a TTS backend and, for an endpoint, which of its voices each speaker gets."""

    backend: TTSBackend = pydantic.Field(
        "espeak", description="espeak: embedded espeak-ng, the persona's espeak voice; endpoint: an OpenAI-compatible "
                              "speech endpoint")
    endpoint: SpeechEndpointConfig = SpeechEndpointConfig()
    voices: dict[str, str] = pydantic.Field(
        default_factory=dict, description="endpoint voice per speaker: agent channel by persona id, user channel by "
                                          "scenario id (its counterpart), e.g. {angry-alex: am_michael}")
    default_voice: str | None = pydantic.Field(
        None, description="endpoint voice of ids not in voices; none: every id in the plan must be in voices")


class TTSConfig(StrictModel):
    """The synthesizer of each channel. `tts: espeak` (or `endpoint`) sets both speakers' backend at once."""

    agent: SpeakerTTSConfig = SpeakerTTSConfig()
    user: SpeakerTTSConfig = SpeakerTTSConfig()

    @pydantic.model_validator(mode="before")
    @classmethod
    def _one_backend_for_both(cls, value: tp.Any) -> tp.Any:
        return {"agent": {"backend": value}, "user": {"backend": value}} if isinstance(value, str) else value


class SpeechConfig(StrictModel):
    """Speech synthesis and the full-duplex timing of the two channels."""

    tts: TTSConfig = TTSConfig()
    # 0.5: on whole-sentence espeak-ng speech the aligner places 67-100% of a conversation's words (40 conversations
    # of the built-in library, 5th percentile 73%; a turn it cannot align at all, about 1 in 8, counts all its
    # words as unplaced); audio that does not say its script (another text, noise, cut short) leaves nearly
    # every word unplaced.
    min_aligned_fraction: float = pydantic.Field(
        0.5, ge=0, le=1, description="quality gate: a conversation (or its voice sample) whose words the aligner "
                                     "placed in the audio less often than this is rejected (low_aligned_fraction)")
    timing: TimingConfig = TimingConfig()
    overlap_probability: float = pydantic.Field(
        0.0, ge=0, le=1, description="extra overlaps on top of the offset shape's own (a persona's interrupts add "
                                     "to it): the reply starts before the other speaker has finished")
    barge_in_probability: float = pydantic.Field(
        0.1, ge=0, le=1, description="the user cuts the agent off mid-turn; the agent stops")
    backchannel_probability: float = pydantic.Field(
        0.3, ge=0, le=1, description="the listener says 'mm-hm' during a long turn")
    loudness_db: float = pydantic.Field(-24.0, le=0, description="loudness (LUFS) of each utterance of both channels")
    max_duration_s: float = pydantic.Field(
        120.0, gt=0, description="conversations are cut here (the prompt phase not counted)")
    voice_sample_text: str = "Hello, this is my voice. I speak like this in every conversation."


class EncodeConfig(StrictModel):
    """Mimi encoding in Ray Data actors."""

    num_actors: int = pydantic.Field(1, ge=1)
    num_cpus_per_actor: float = pydantic.Field(1.0, gt=0)
    num_gpus_per_actor: float = pydantic.Field(0.0, ge=0, description="e.g. 0.25 to pack 4 actors per GPU")
    torch_threads: int = pydantic.Field(1, ge=1, description="intra-op threads per actor")
    batch_size: int = pydantic.Field(4, ge=1, description="conversations per Mimi batch")
    device: str = pydantic.Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")

    @pydantic.model_validator(mode="after")
    def _gpu_needs_cuda(self) -> "EncodeConfig":
        if self.num_gpus_per_actor > 0 and self.device == "cpu":
            raise ValueError("num_gpus_per_actor > 0 reserves a GPU that device 'cpu' would leave idle; "
                             "set device: cuda")
        return self


class DataConfig(StrictModel):
    output_dir: str = "artifacts/data"
    seed: int = 1234
    conversations_per_pair: int = pydantic.Field(
        1, ge=1, description="conversations per (persona, scenario) pair")
    max_conversations: int | None = pydantic.Field(
        None, ge=1, description="cap on the plan (taken in a stable, shuffled order)")
    prompt_detail: PromptDetail | tp.Literal["mixed"] = pydantic.Field(
        "mixed", description="system prompt level of detail; mixed: drawn per conversation")
    alignment: AlignmentName = "word"
    include_voice_prompt: bool = pydantic.Field(
        True, description="prefix each conversation with the agent's voice prompt (SPEC section 3)")
    rows_per_shard: int = pydantic.Field(64, ge=1)
    max_attempts: int = pydantic.Field(2, ge=1, description="tries per conversation before quarantine")
    # 0.2: a healthy run rejects a few conversations (an LLM's dialogue failing validation); a fifth or
    # more points to something systematic (espeak-ng missing, an endpoint down, a bug) and skews the
    # balance of personas and scenarios the plan asked for.
    max_reject_fraction: float = pydantic.Field(
        0.2, ge=0, le=1, description="the run fails (non-zero exit, manifest status too_many_rejects) when a larger "
                                     "fraction of the plan is rejected; 1 accepts any number")
    library: LibraryConfig = LibraryConfig()
    dialogue: DialogueConfig = DialogueConfig()
    speech: SpeechConfig = SpeechConfig()
    encode: EncodeConfig = EncodeConfig()
    ingest: IngestConfig = IngestConfig()
