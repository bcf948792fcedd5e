"""The `evaluation` config section: behavioural evaluation (test set, engine runs, scoring, judge)."""

from __future__ import annotations

import typing as tp

import pydantic

from plexray.config import StrictModel
from plexray.data.config import LibraryConfig
from plexray.evaluation.judge import JudgeConfig
from plexray.evaluation.testset import TASKS
from plexray.model.demo import DEMO_VOICES
from plexray.serve.config import SAMPLING_FIELDS, checked_sampling
from plexray.speech.asr import ASRConfig
from plexray.speech.speaker import SpeakerConfig

DEFAULT_COUNTS = {"pause_handling": 20, "turn_taking": 20, "interruption": 20, "user_backchannel": 20,
                  "backchannel": 20, "role": 30}


class TestSetConfig(StrictModel):
    """How `plexray evaluate behaviour` builds its test set (see plexray.evaluation.testset)."""

    conversations: dict[str, int] = pydantic.Field(
        default_factory=lambda: dict(DEFAULT_COUNTS),
        description=f"conversations per task ({', '.join(TASKS)}); role conversation i asks question type i % 6 "
                    "of persona i // 6, so 6 per persona covers every question type; a task left out has none")
    voices: list[str] = pydantic.Field(
        default_factory=lambda: list(DEMO_VOICES),
        description="agent voices, as served: names of the checkpoint's voices (the demo checkpoint has "
                    f"{', '.join(DEMO_VOICES)}; the real one NATF0-3, NATM0-3, VARF0-4, VARM0-4)")
    library: LibraryConfig = pydantic.Field(
        default_factory=LibraryConfig, description="personas and scenarios of the role task (data library)")
    tts: tp.Literal["espeak"] = pydantic.Field("espeak",
                                               description="TTS backend of the user's speech (plexray.data.tts)")
    trailing_silence_s: float = pydantic.Field(
        4.0, gt=0, description="silence after the user's last word, for the agent's answer")

    @pydantic.field_validator("conversations")
    @classmethod
    def _known_tasks(cls, counts: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(counts) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
        negative = sorted(task for task, count in counts.items() if count < 0)
        if negative:
            raise ValueError(f"negative count for {negative}")
        return counts


class EvaluationConfig(StrictModel):
    """Behavioural evaluation: turn-taking, interruptions, backchannels and role adherence of checkpoints."""

    test_set: TestSetConfig = TestSetConfig()
    test_set_dir: str | None = pydantic.Field(
        None, description="an existing test set (plexray's layout) to use instead of building one")
    seed: int = pydantic.Field(0, ge=0, description="seed of the test set and of the sessions' sampling")
    batch_size: int = pydantic.Field(8, ge=1, le=1024, description="B: conversations stepped together per engine")
    num_workers: int = pydantic.Field(1, ge=1, description="Ray workers, one engine (model copy) each")
    device: str = pydantic.Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
                                 description="where each worker runs its model; cuda: one GPU per worker")
    num_cpus: float = pydantic.Field(1.0, gt=0, description="CPUs per worker")
    greedy: bool = pydantic.Field(
        False, description="text and audio temperature 0; otherwise sampled with the served defaults (and "
                           "`sampling`), seeded per conversation from `seed`")
    sampling: dict[str, float | int] = pydantic.Field(
        default_factory=dict,
        description=f"session settings for every conversation: any of {', '.join(SAMPLING_FIELDS)}")
    asr: ASRConfig = pydantic.Field(default_factory=ASRConfig, description="speech recognition for word timings")
    speaker: SpeakerConfig = pydantic.Field(
        default_factory=SpeakerConfig, description="speaker embeddings for voice similarity to the voice prompt")
    judge: JudgeConfig = pydantic.Field(default_factory=JudgeConfig,
                                        description="LLM judge of role answers; no base_url: judging skipped")
    output_dir: str = pydantic.Field("artifacts/evaluation", description="where reports and agent audio go")

    @pydantic.field_validator("sampling")
    @classmethod
    def _known_sampling_fields(cls, sampling: dict) -> dict:
        return checked_sampling(sampling)
