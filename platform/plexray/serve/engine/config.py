"""Settings of the engine (per replica) and of one session (per conversation)."""

from __future__ import annotations

import secrets
import typing as tp

import pydantic

from plexray.config import StrictModel


# Bounds of the session settings: everything the clients send (NVIDIA's web client: temperatures
# 0.2-1.2, top-k 10-500, pad_mult -4..4, repetition penalty 1-2 over 0-200 tokens, seeds -1 or up to
# 10**6) and far beyond, but no value the engine's tensors cannot hold or its arithmetic cannot keep
# finite in float32 (logit x penalty, pad_mult x temperature).
MAX_TEMPERATURE = 100.0
MAX_REPETITION_PENALTY = 100.0
MAX_PAD_MULT = 100.0  # exp(88) already overflows float32: beyond, padding is always or never chosen
TEXT_VOCABULARY = 32000  # the real checkpoints' text vocabulary; a smaller model takes a larger top-k
AUDIO_CODEBOOK_SIZE = 2048  # as its whole vocabulary (so does Kyutai's sampler)
LM_CONTEXT_FRAMES = 3000  # a session generates at most one text token per frame of the LM context
RANDOM_SEED = -1  # NVIDIA's and Kyutai's clients: "let the server choose"
SEED_LIMIT = 2**31


class AdapterServingConfig(StrictModel):
    """LoRA adapters per session on one base model (docs/adapters.md)."""

    registry: str = pydantic.Field(description="directory holding one adapter per subdirectory: <registry>/<name>/ "
                                               "with peft's adapter_config.json and adapter_model.safetensors")
    max_on_device: int = pydantic.Field(4, ge=1, le=256, description="adapters in the device tables at once "
                                                                     "(every targeted linear holds this many + 1 rows)")
    max_in_host: int = pydantic.Field(16, ge=1, description="adapters kept read in host memory (least recently "
                                                             "used out, never one a session needs)")
    max_rank: int = pydantic.Field(64, ge=1, le=1024, description="largest LoRA rank served (tables are this wide; "
                                                                   "smaller ranks are padded with zeros)")
    targets: tp.Literal["attention-gating", "all-linear"] = pydantic.Field(
        "attention-gating", description="the linears that take adapters, as train.lora.target_modules names them; an "
                                        "adapter on other linears is refused")


class EngineConfig(StrictModel):
    """One engine = one model and `max_sessions` slots stepped together every 80 ms."""

    max_sessions: int = pydantic.Field(4, ge=1, le=1024, description="slots B: conversations stepped in one batch")
    max_session_s: float = pydantic.Field(
        1800.0, gt=0, description="a conversation ends (reason 'max_duration') after this much audio: a policy "
                                  "(cost, abuse), not a limit of the model: past the LM context the prompt stays "
                                  "pinned and the conversation slides behind it")
    idle_timeout_s: float = pydantic.Field(
        30.0, gt=0, description="a session whose client pushed no audio for this long ends ('idle_timeout')")
    output_buffer_frames: int = pydantic.Field(
        25, ge=1, description="80 ms output frames kept for a slow reader; older ones are dropped and counted")
    input_buffer_frames: int = pydantic.Field(
        25, ge=1, description="80 ms input frames kept ahead of the engine; older ones are dropped and counted")
    prefill_frames_per_tick: int = pydantic.Field(
        32, ge=1, description="prompt frames prefilled per tick (all joining sessions together): bounds what a "
                              "join costs the sessions already talking")
    max_prompt_frames: int = pydantic.Field(
        1000, ge=16, description="a longer voice + text prompt is refused (PromptTooLongError)")
    repetition_context_max: int = pydantic.Field(
        200, ge=1, le=LM_CONTEXT_FRAMES, description="largest repetition_penalty_context a session may ask for "
                                                     "(NVIDIA's client offers up to 200)")
    cuda_graphs: bool = pydantic.Field(False, description="capture the per-tick LM step as CUDA graphs (GPU only: "
                                                          "CUDA graphs are a CUDA feature, ignored on CPU); "
                                                          "torch.compile is model.compile")
    tick_history: int = pydantic.Field(1000, ge=10, description="ticks kept for the p50/p99 metrics")
    adapters: AdapterServingConfig | None = pydantic.Field(
        None, description="serve LoRA adapters per session (None: the base model alone, no adapter tables)")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _refuse_removed_torch_compile(cls, raw: object) -> object:
        # The engine had its own compile switch, which flipped the same process-wide flag as
        # model.compile: two knobs for one setting, the last one applied winning.
        if isinstance(raw, dict) and "torch_compile" in raw:
            raise ValueError("torch_compile was removed: set model.compile instead (one switch for every process "
                             "that loads the model)")
        return raw


class SessionSettings(StrictModel):
    """What a client chooses for its conversation (the query parameters of the PersonaPlex protocol).

    The sampling settings mean what they mean in Kyutai's moshi server (whose protocol NVIDIA's
    client speaks); see each field.
    """

    text_prompt: str = pydantic.Field("", description="role prompt; wrapped as '<system> ... <system>'")
    voice: str | None = pydantic.Field(None, description="voice name from the checkpoint's voices (e.g. NATF0); "
                                                         "None: no voice prompt")
    adapter: str | None = pydantic.Field(None, description="LoRA adapter of this conversation, by registry name "
                                                           "(None: the base model)")
    text_temperature: float = pydantic.Field(0.7, ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                             description="0 = greedy")
    text_topk: int = pydantic.Field(25, ge=1, le=TEXT_VOCABULARY)
    audio_temperature: float = pydantic.Field(0.8, ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
                                              description="0 = greedy")
    audio_topk: int = pydantic.Field(250, ge=1, le=AUDIO_CODEBOOK_SIZE)
    text_seed: int = pydantic.Field(0, ge=RANDOM_SEED, lt=SEED_LIMIT,
                                    description="-1: the server draws a seed (the settings then hold it)")
    audio_seed: int = pydantic.Field(0, ge=RANDOM_SEED, lt=SEED_LIMIT,
                                     description="-1: the server draws a seed (the settings then hold it)")
    repetition_penalty: float = pydantic.Field(
        1.0, ge=1.0, le=MAX_REPETITION_PENALTY, allow_inf_nan=False,
        description="CTRL-style penalty on text tokens (padding excluded) seen in the last "
                    "repetition_penalty_context generated text tokens; 1.0 = off")
    repetition_penalty_context: int = pydantic.Field(32, ge=0, le=LM_CONTEXT_FRAMES, description="0 = off")
    pad_mult: float = pydantic.Field(
        0.0, ge=-MAX_PAD_MULT, le=MAX_PAD_MULT, allow_inf_nan=False,
        description="Kyutai's pad_mult: the text padding token's probability is multiplied by exp(pad_mult) "
                    "before top-k; 0 = off, > 0 makes the agent speak less, < 0 more")

    @pydantic.field_validator("text_seed", "audio_seed")
    @classmethod
    def _draw_random_seed(cls, seed: int) -> int:
        # Drawn here, not at sampling time, so a session's settings always name the seed it ran with.
        return secrets.randbelow(SEED_LIMIT) if seed == RANDOM_SEED else seed
