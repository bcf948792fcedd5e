"""One checkpoint's test conversations spread over Ray workers: each loads the model once, runs batches of
conversations through its engine (plexray.evaluation.runner) and scores each one as it finishes.

`evaluate_conversations` is the plain function a worker runs (tests and benchmarks call it without
Ray); `run_checkpoint` is the Ray shell around it: one actor per worker (`num_gpus=1` on a GPU
device), chunks of conversations handed out as actors free up, progress on the driver, and every
result handed to the caller as it arrives, so nothing finished is lost if a later one fails.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as tp
import zlib
from pathlib import Path

import numpy as np

from plexray.errors import PlexrayError
from plexray.model import ModelBundle
from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.engine import Engine, EngineConfig, SessionSettings
from plexray.serve.engine.config import SEED_LIMIT
from plexray.evaluation.runner import EvalConversation, run_conversations

if tp.TYPE_CHECKING:
    from plexray.settings import PlexrayConfig

logger = logging.getLogger(__name__)


class EvaluationError(PlexrayError):
    """A behavioural evaluation cannot run (a checkpoint that does not load, a missing voice, ...)."""


def load_checkpoint(config: "PlexrayConfig", ref: str) -> ModelBundle:
    """A checkpoint as `model.checkpoint` takes it (a directory, `demo`, `hf://...`), or a training
    checkpoint (a LoRA adapter, or full LM weights) on the base model of the `model` section.

    An adapter is merged into the LM (as `plexray merge` would) so the engine runs a plain LM.
    """
    from plexray.train import checkpoint

    model_config = config.model.model_copy(update={"device": config.evaluation.device})
    path = Path(ref)
    if not path.is_dir() or checkpoint.is_standalone(path):
        return model_config.model_copy(update={"checkpoint": ref}).load()
    bundle = model_config.load()
    return dataclasses.replace(bundle, lm=checkpoint.merged_weights(bundle.lm, path).eval())


def session_settings(conversation: dict, config: "PlexrayConfig") -> SessionSettings:
    """The conversation's persona as served, with the evaluation's sampling; seeds from (seed, conversation id)."""
    evaluation = config.evaluation
    seed = zlib.crc32(f"{evaluation.seed}:{conversation['id']}".encode()) % SEED_LIMIT
    greedy = {"text_temperature": 0.0, "audio_temperature": 0.0} if evaluation.greedy else {}
    persona = conversation["persona"]
    return SessionSettings(text_prompt=persona["text_prompt"], voice=persona["voice"], text_seed=seed,
                           audio_seed=seed, **{**evaluation.sampling, **greedy})


def engine_config(config: "PlexrayConfig") -> EngineConfig:
    """The served engine's settings with B = evaluation.batch_size slots."""
    return config.serve.engine.model_copy(update={"max_sessions": config.evaluation.batch_size})


def voice_references(bundle: ModelBundle, encoder, voices: tp.Iterable[str], min_speech_s: float) -> dict:
    """voice name -> VoiceReference (plexray.evaluation.metrics) for each of `voices` the checkpoint has a
    sample of. A voice given only as NVIDIA's prefill (.pt: embeddings and token cache, no audio) has none."""
    from plexray.evaluation.metrics import VoiceReference

    return {name: VoiceReference(encoder, encoder.embed(bundle.voices[name].load_wav(), SAMPLE_RATE), min_speech_s)
            for name in voices if bundle.voices[name].wav_path is not None}


def evaluate_conversations(bundle: ModelBundle, transcriber, config: "PlexrayConfig",
                           conversations: list[tuple[dict, np.ndarray]],
                           voices: dict | None = None) -> tp.Iterator[dict]:
    """Run (metadata, user track [N] float32 24 kHz) pairs through the engine and score each; `voices`
    (voice_references) gives voice similarity where the conversation's voice is in it.

    Yields one record per conversation: id, task, scores (score_conversation's dict, or None),
    error (None, or why it failed: the engine refused it, its session broke, scoring raised),
    text [(frame start s, piece)] and agent_audio ([N] float32, or None).
    """
    from plexray.evaluation.metrics import score_conversation

    voices = voices or {}
    metadata = {conversation["id"]: conversation for conversation, _ in conversations}
    runs = [EvalConversation(conversation["id"], session_settings(conversation, config), audio)
            for conversation, audio in conversations]
    for track in run_conversations(lambda: Engine(bundle, engine_config(config)), runs):
        conversation = metadata[track.id]
        record = {"id": track.id, "task": conversation["task"], "scores": None, "error": track.error,
                  "text": track.text, "agent_audio": track.audio}
        if track.error is None:
            try:
                record["scores"] = score_conversation(conversation, track.audio, SAMPLE_RATE, transcriber,
                                                      voices.get(conversation["persona"]["voice"]))
            except Exception as exc:  # one conversation's scoring must not lose the others
                record["error"] = f"scoring failed: {type(exc).__name__}: {exc}"
        yield record


class EvaluationWorker:
    """A Ray actor: one model, one engine at a time, one transcriber and speaker encoder; runs chunks of
    conversations."""

    def __init__(self, config: "PlexrayConfig", ref: str):
        from plexray.speech.asr import make_transcriber
        from plexray.speech.speaker import make_speaker_encoder

        self.config = config
        self.problem: str | None = None
        self.voices: dict = {}  # voice name -> VoiceReference, once ready() knows the test set's voices
        try:
            self.bundle = load_checkpoint(config, ref)
            self.transcriber = make_transcriber(config.evaluation.asr)
            self.speaker = make_speaker_encoder(config.evaluation.speaker)
        except Exception as exc:  # reported by ready(): an actor whose __init__ raises hides the message
            self.problem = f"{type(exc).__name__}: {exc}"

    def ready(self, voices: list[str]) -> str | None:
        """None if this worker can run conversations with `voices`, else why not."""
        if self.problem is None:
            missing = sorted(set(voices) - set(self.bundle.voices))
            if missing:
                return (f"the checkpoint has no voice(s) {missing} (its voices: {sorted(self.bundle.voices)}); "
                        "set evaluation.test_set.voices to voices it has")
            if self.speaker is not None:
                self.voices = voice_references(self.bundle, self.speaker, voices,
                                               self.config.evaluation.speaker.min_speech_s)
        return self.problem

    def run(self, conversations: list[tuple[dict, np.ndarray]]) -> list[dict]:
        return list(evaluate_conversations(self.bundle, self.transcriber, self.config, conversations, self.voices))

    def scoring(self, voices: list[str]) -> dict:
        """What scored the conversations: the ASR backend, the speaker encoder (None: switched off) and
        which of `voices` had no sample to compare with."""
        return {"asr_backend": self.transcriber.name,
                "speaker_encoder": self.speaker.name if self.speaker else None,
                "voices_without_sample": sorted(set(voices) - set(self.voices)) if self.speaker else []}


def run_checkpoint(config: "PlexrayConfig", ref: str, conversations: list[dict],
                   read_audio: tp.Callable[[dict], np.ndarray], on_record: tp.Callable[[dict], None],
                   label: str = "") -> dict:
    """Evaluate `ref` on `conversations` over `evaluation.num_workers` Ray actors; returns what scored them
    (EvaluationWorker.scoring).

    `on_record` gets each conversation's record (see evaluate_conversations) as soon as its chunk is
    back. A chunk whose worker dies comes back as errors for its conversations; a checkpoint that
    does not load (or lacks a voice, or an ASR backend that is missing) raises EvaluationError.
    """
    import ray
    from tqdm import tqdm

    evaluation = config.evaluation
    gpus = 0 if evaluation.device == "cpu" else 1
    actor = ray.remote(EvaluationWorker).options(num_cpus=evaluation.num_cpus, num_gpus=gpus, max_restarts=1)
    workers = [actor.remote(config, ref) for _ in range(min(evaluation.num_workers, max(1, len(conversations))))]
    try:
        voices = sorted({c["persona"]["voice"] for c in conversations if c["persona"]["voice"]})
        for problem in ray.get([worker.ready.remote(voices) for worker in workers]):
            if problem is not None:
                raise EvaluationError(f"checkpoint {ref}: {problem}")
        scoring = ray.get(workers[0].scoring.remote(voices))
        # Longest first, in chunks of 2 B: each engine's batch stays full while the chunk's sessions
        # of different lengths come and go, and the driver hears back often enough for progress.
        ordered = sorted(conversations, key=lambda c: -c["duration_s"])
        size = 2 * evaluation.batch_size
        chunks = [ordered[start:start + size] for start in range(0, len(ordered), size)]
        in_flight: dict = {}
        idle = list(workers)
        # disable=None: a bar on a terminal only (redrawn with carriage returns, bars run together in a log file)
        with tqdm(total=len(conversations), desc=f"evaluate {label or ref}", unit="conversation",
                  disable=None) as progress:
            while chunks or in_flight:
                while chunks and idle:
                    worker, chunk = idle.pop(), chunks.pop(0)
                    in_flight[worker.run.remote([(c, read_audio(c)) for c in chunk])] = (worker, chunk)
                [done], _ = ray.wait(list(in_flight), num_returns=1)
                worker, chunk = in_flight.pop(done)
                idle.append(worker)
                try:
                    records = ray.get(done)
                except ray.exceptions.RayError as exc:
                    logger.warning("a worker failed on %d conversation(s): %s", len(chunk), exc)
                    message = f"worker failed: {str(exc).splitlines()[0]}"
                    records = [{"id": c["id"], "task": c["task"], "scores": None, "error": message, "text": [],
                                "agent_audio": None} for c in chunk]
                for record in records:
                    on_record(record)
                progress.update(len(records))
        return scoring
    finally:
        for worker in workers:
            ray.kill(worker)
