"""Settings of the engine (per replica) and of one session (per conversation)."""

from __future__ import annotations

import pydantic

from plexray.config import StrictModel


class EngineConfig(StrictModel):
    """One engine = one model and `max_sessions` slots stepped together every 80 ms."""

    max_sessions: int = pydantic.Field(4, ge=1, le=1024, description="slots B: conversations stepped in one batch")
    max_session_s: float = pydantic.Field(
        230.0, gt=0, description="a conversation ends (reason 'max_duration') after this much audio; it ends "
                                 "earlier ('context_full') when prompt + conversation reach the LM context")
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
        64, ge=1, description="largest repetition_penalty_context a session may ask for")
    cuda_graphs: bool = pydantic.Field(False, description="capture the per-tick LM step as CUDA graphs (GPU only; "
                                                          "ignored on CPU)")
    torch_compile: bool = pydantic.Field(False, description="torch.compile moshi's kernels (GPU only; ignored on CPU)")
    tick_history: int = pydantic.Field(1000, ge=10, description="ticks kept for the p50/p99 metrics")


class SessionSettings(StrictModel):
    """What a client chooses for its conversation (the query parameters of the PersonaPlex protocol)."""

    text_prompt: str = pydantic.Field("", description="role prompt; wrapped as '<system> ... <system>'")
    voice: str | None = pydantic.Field(None, description="voice name from the checkpoint's voices (e.g. NATF0); "
                                                         "None: no voice prompt")
    text_temperature: float = pydantic.Field(0.7, ge=0, description="0 = greedy")
    text_topk: int = pydantic.Field(25, ge=1)
    audio_temperature: float = pydantic.Field(0.8, ge=0, description="0 = greedy")
    audio_topk: int = pydantic.Field(250, ge=1)
    text_seed: int = pydantic.Field(0, ge=0, lt=2**31)
    audio_seed: int = pydantic.Field(0, ge=0, lt=2**31)
    repetition_penalty: float = pydantic.Field(
        1.0, ge=1.0, description="CTRL-style penalty on text tokens (padding excluded) seen in the last "
                                 "repetition_penalty_context generated text tokens; 1.0 = off")
    repetition_penalty_context: int = pydantic.Field(32, ge=1)
    pad_mult: float = pydantic.Field(
        1.0, gt=0, description="multiplies the probability of the text padding token (adds log(pad_mult) to its "
                               "tempered logit): > 1 makes the agent quieter in text, < 1 chattier")
