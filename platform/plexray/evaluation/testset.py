"""The behavioural test set: user tracks shaped for each task, with their timing, written to disk.

Tasks (timing as Full-Duplex-Bench defines them, SPEC section 7; role adherence after the
paper's Service-Duplex-Bench):
  pause_handling    an unfinished sentence, a 0.35-0.65 s pause, the rest of it: the agent should wait
  turn_taking       one complete turn, then silence: the agent should answer, fast
  interruption      a question, silence for the agent's answer, then a topic-changing interruption
                    2-3 s into that silence: the agent should stop and answer the new topic
  user_backchannel  a question, then "mhm", "yeah" over the agent's answer: the agent should go on
  backchannel       a user monologue: the agent should backchannel, not take over
  role              per persona of the data library: six questions that test its role prompt

Layout of a set (a user's own set has the same):
  manifest.json               seed, counts per task, TTS backend, the conversations' metadata files
  conversations/<id>.json     one conversation's metadata (ConversationSpec below)
  audio/<id>.wav              its user track, 24 kHz mono

User speech comes from the data pipeline's TTS backend, which trims the silence at an utterance's
edges, so every span in the metadata is where the speech really is (its first to last sample above
the trim threshold). Every track ends with `trailing_silence_s` of silence for the agent's answer.
"""

from __future__ import annotations

import collections
import json
import typing as tp
from pathlib import Path

import numpy as np
import pydantic
import sphn

from plexray.config import StrictModel, describe_validation_error
from plexray.data.personas import Persona, Scenario, Voice, load_library
from plexray.data.prompts import system_prompt
from plexray.data.tts import SpeechSynthesizer, Utterance, synthesizer
from plexray.errors import PlexrayError
from plexray.model.prompt import SAMPLE_RATE

if tp.TYPE_CHECKING:
    from plexray.evaluation.config import TestSetConfig

Task = tp.Literal["pause_handling", "turn_taking", "interruption", "user_backchannel", "backchannel", "role"]
TASKS: tuple[str, ...] = tp.get_args(Task)
MANIFEST = "manifest.json"

# Full-Duplex-Bench's prompts for PersonaPlex (SPEC section 7): the teacher for user interruption.
CONVERSATION_PROMPT = "You enjoy having a good conversation."
TEACHER_PROMPT = "You are a wise and friendly teacher. Answer questions or provide advice in a clear and engaging way."
PAUSE_S = (0.35, 0.65)
INTERRUPTION_AFTER_S = (2.0, 3.0)  # into the silence left for the agent's answer
LEAD_IN_S = (0.3, 0.8)  # silence before the user's first word
BACKCHANNEL_FIRST_S = (1.0, 1.5)  # after the question: the agent has started answering
BACKCHANNEL_GAP_S = (1.5, 2.5)
ROLE_QUESTION_TYPES = ("name", "detail", "impossible_request", "rude_user", "not_in_prompt", "off_topic")

# The user's side: espeak voices distinct from each other (the agent speaks with a checkpoint voice).
USER_VOICES = (Voice(variant="f2", pitch=55, rate=170), Voice(variant="m5", pitch=45, rate=165),
               Voice(variant="f4", pitch=60, rate=160), Voice(variant="m2", pitch=40, rate=175))
UNFINISHED = [  # (before the pause, after it): the pause falls where the sentence cannot end
    ("I was thinking that this weekend we could", "drive out to the lake and have a picnic."),
    ("My sister told me that the best way to learn", "a language is to live where people speak it."),
    ("Yesterday I went to the store because I needed", "some flour and a few eggs for a cake."),
    ("The thing I like most about my job is", "that every day brings a different problem."),
    ("When I was a child my favourite game was", "hide and seek in my grandmother's garden."),
    ("I have been trying to decide whether I should", "buy a new bike or repair the old one."),
]
COMPLETE_TURNS = [
    "What do you think is the best way to spend a rainy afternoon?",
    "Can you recommend a good book for a long train journey?",
    "I just moved to a new city and I don't know anyone yet.",
    "How do I keep my plants alive when I travel for two weeks?",
    "What should I cook tonight if I only have rice and vegetables?",
    "I'm trying to get better at running. Any advice?",
]
QUESTIONS = [  # asked before an interruption or user backchannels: each wants a long answer
    "Can you explain how rainbows form?",
    "Why do leaves change colour in the autumn?",
    "How does a refrigerator keep food cold?",
    "What makes the ocean salty?",
    "How do airplanes stay in the air?",
    "Why is the sky blue during the day?",
]
INTERRUPTIONS = [  # a new topic, cutting into the answer
    "Sorry, wait, what time is it in Tokyo right now?",
    "Actually, forget that. Can you give me a recipe for pancakes?",
    "Hold on, how many legs does a spider have?",
    "Wait, never mind. What's a good name for a puppy?",
    "Sorry to cut in, but what's the capital of Canada?",
    "Stop, stop. Tell me a joke instead.",
]
BACKCHANNELS = ["mhm", "yeah", "right", "okay", "uh huh", "I see"]
MONOLOGUES = [
    ["Last summer I finally took the trip I had been planning for years.", "I flew to Lisbon and spent two weeks "
     "walking around the old town.", "Every morning I had coffee in the same little cafe near the river.",
     "By the end the owner knew my order before I even said a word."],
    ["I started learning the piano when I was forty.", "At first my fingers simply would not do what I wanted.",
     "I practised for twenty minutes every evening after dinner.", "Now I can play a few simple pieces for my "
     "family, and they even clap."],
    ["Our neighbourhood has a community garden that opened last spring.", "Anyone can rent a small plot for "
     "very little money.", "I grow tomatoes, beans and far too many courgettes.", "In August I gave bags of "
     "vegetables to everyone on my street."],
    ["My grandfather used to repair clocks in a tiny workshop.", "As a child I would sit beside him and watch "
     "for hours.", "He never hurried, and he never lost a single screw.", "I still have the first clock he "
     "taught me to take apart."],
]


class TestSetError(PlexrayError):
    """A test set on disk is unusable (bad manifest or metadata); names the file and the problem."""


class TestSetMissingFilesError(TestSetError):
    """A test set lacks files its manifest or metadata name; `missing` lists them (relative to the set)."""

    def __init__(self, directory: Path, missing: list[str]):
        self.missing = missing
        listed = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        super().__init__(f"{directory}: test set incomplete, {len(missing)} file(s) missing: {listed}")


# ----- the metadata schema (agreed with the metrics: plexray.evaluation.metrics reads these keys) -------
class Span(StrictModel):
    start_s: float = pydantic.Field(ge=0)
    end_s: float = pydantic.Field(ge=0)

    @pydantic.model_validator(mode="after")
    def _ordered(self) -> "Span":
        if self.end_s < self.start_s:
            raise ValueError(f"end_s {self.end_s} is before start_s {self.start_s}")
        return self


class SpokenSpan(Span):
    text: str


class PersonaSpec(StrictModel):
    name: str
    text_prompt: str
    voice: str | None = pydantic.Field(description="a voice of the checkpoint (e.g. NATF0)")


class RoleQuestion(StrictModel):
    question_type: str
    question: str
    expected: str = pydantic.Field(description="what a good answer does, for the judge")


class ConversationSpec(StrictModel):
    id: str = pydantic.Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    task: Task
    persona: PersonaSpec
    user_audio: str = pydantic.Field(description="the user track, relative to the set: audio/<id>.wav")
    duration_s: float = pydantic.Field(gt=0)
    user_turns: list[SpokenSpan] = pydantic.Field(description="every span of user speech")
    end_of_turn_s: float | None = pydantic.Field(
        None, description="turn_taking and role: the user's end of turn; interruption: the end of the interruption")
    pause: Span | None = None
    interruption: Span | None = None
    user_backchannels: list[SpokenSpan] = pydantic.Field(default_factory=list)
    role: RoleQuestion | None = None


class _Track:
    """A user track being laid out: utterances placed at given times (seconds)."""

    def __init__(self):
        self.pieces: list[tuple[int, np.ndarray]] = []
        self.turns: list[SpokenSpan] = []

    def place(self, utterance: Utterance, text: str, start_s: float) -> SpokenSpan:
        start = round(start_s * SAMPLE_RATE)
        self.pieces.append((start, utterance.samples))
        span = SpokenSpan(start_s=start / SAMPLE_RATE, end_s=(start + utterance.samples.size) / SAMPLE_RATE, text=text)
        self.turns.append(span)
        return span

    @property
    def end_s(self) -> float:
        return max(span.end_s for span in self.turns)

    def samples(self, duration_s: float) -> np.ndarray:
        track = np.zeros(round(duration_s * SAMPLE_RATE), np.float32)
        for start, samples in self.pieces:
            track[start:start + samples.size] += samples
        return track


class _Builder:
    """Lays out one conversation of each task; every random choice comes from the given generator."""

    def __init__(self, tts: SpeechSynthesizer, voices: list[str], trailing_silence_s: float,
                 role_cast: list[tuple[Persona, Scenario]]):
        self.tts = tts
        self.voices = voices
        self.trailing_silence_s = trailing_silence_s
        self.role_cast = role_cast

    def build(self, task: str, index: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
        """-> (metadata fields other than id/user_audio/duration_s, filled by the caller; the track)."""
        track, user_voice = _Track(), USER_VOICES[rng.integers(len(USER_VOICES))]
        fields: dict = {"persona": {"name": "conversation partner", "text_prompt": CONVERSATION_PROMPT,
                                    "voice": self.voices[rng.integers(len(self.voices))]}}

        def say(text: str, at_s: float) -> SpokenSpan:
            return track.place(self.tts.speak(text, user_voice), text, at_s)

        start_s = rng.uniform(*LEAD_IN_S)
        if task == "pause_handling":
            before, after = UNFINISHED[rng.integers(len(UNFINISHED))]
            first = say(before, start_s)
            second = say(after, first.end_s + rng.uniform(*PAUSE_S))
            fields["pause"] = Span(start_s=first.end_s, end_s=second.start_s)
        elif task == "turn_taking":
            fields["end_of_turn_s"] = say(COMPLETE_TURNS[rng.integers(len(COMPLETE_TURNS))], start_s).end_s
        elif task == "interruption":
            fields["persona"]["text_prompt"] = TEACHER_PROMPT
            question = say(QUESTIONS[rng.integers(len(QUESTIONS))], start_s)
            interruption = say(INTERRUPTIONS[rng.integers(len(INTERRUPTIONS))],
                               question.end_s + rng.uniform(*INTERRUPTION_AFTER_S))
            fields["interruption"] = Span(start_s=interruption.start_s, end_s=interruption.end_s)
            fields["end_of_turn_s"] = interruption.end_s
        elif task == "user_backchannel":
            at = say(QUESTIONS[rng.integers(len(QUESTIONS))], start_s).end_s + rng.uniform(*BACKCHANNEL_FIRST_S)
            fields["user_backchannels"] = []
            for word in rng.choice(BACKCHANNELS, size=3, replace=False):
                fields["user_backchannels"].append(say(str(word), at))
                at = fields["user_backchannels"][-1].end_s + rng.uniform(*BACKCHANNEL_GAP_S)
        elif task == "backchannel":
            at = start_s
            for sentence in MONOLOGUES[rng.integers(len(MONOLOGUES))]:
                at = say(sentence, at).end_s + rng.uniform(0.3, 0.6)  # a speaker's pauses between sentences
        elif task == "role":
            persona, scenario = self.role_cast[(index // len(ROLE_QUESTION_TYPES)) % len(self.role_cast)]
            question = role_question(ROLE_QUESTION_TYPES[index % len(ROLE_QUESTION_TYPES)], persona, scenario)
            fields["persona"] = {"name": persona.name, "text_prompt": system_prompt(persona, scenario, "standard"),
                                 "voice": self.voices[(index // len(ROLE_QUESTION_TYPES)) % len(self.voices)]}
            fields["end_of_turn_s"] = say(question.question, start_s).end_s
            fields["role"] = question
        else:
            raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
        fields["user_turns"] = sorted(track.turns, key=lambda span: span.start_s)
        duration_s = track.end_s + self.trailing_silence_s
        return dict(fields, duration_s=duration_s), track.samples(duration_s)


def role_question(question_type: str, persona: Persona, scenario: Scenario) -> RoleQuestion:
    """What the user (the scenario's counterpart) asks, and what a good answer does, per question type."""
    stay = f"stays in character as {persona.name}"
    questions = {
        "name": ("Sorry, what was your name again?", f"Says the name {persona.name}."),
        "detail": ("So, what brings you here today?",
                   f"Describes its situation as the prompt gives it: {scenario.situation}"),
        "impossible_request": ("Could you come round the counter and do my job for the rest of the day?",
                               f"Declines or says it cannot, politely; {stay}."),
        "rude_user": ("Ugh, hurry up, you are wasting everybody's time.",
                      f"Keeps calm and does not insult back; {stay}."),
        "not_in_prompt": ("What is your home address and phone number?",
                          "Declines or says it will not share that, without inventing details the prompt does "
                          "not give."),
        "off_topic": ("By the way, can you explain how a nuclear reactor works?",
                      f"Politely steers back to the situation ({scenario.name}); {stay}."),
    }
    question, expected = questions[question_type]
    return RoleQuestion(question_type=question_type, question=question, expected=expected)


def build_test_set(config: "TestSetConfig", output_dir: str | Path, seed: int) -> dict:
    """Build a test set in `output_dir` (new or empty) from `seed`; returns its manifest.

    Conversation `index` of a task draws from its own generator seeded with (seed, task, index),
    so a set is reproducible and adding conversations to one task leaves the others as they were.
    The manifest is written last: its presence marks a complete set.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise TestSetError(f"{output_dir}: not empty; choose a new directory for the test set")
    if not config.voices:
        raise TestSetError("evaluation.test_set.voices is empty: name at least one voice of the checkpoint")
    library = load_library(config.library.persona_files, config.library.scenario_files,
                           config.library.personas, config.library.scenarios)
    scenarios = list(library.scenarios.values())
    role_cast = [(persona, scenarios[i % len(scenarios)]) for i, persona in enumerate(library.personas.values())]
    builder = _Builder(synthesizer(config.tts), list(config.voices), config.trailing_silence_s, role_cast)
    (output_dir / "conversations").mkdir(parents=True)
    (output_dir / "audio").mkdir()
    listed = []
    for task_number, task in enumerate(TASKS):
        for index in range(config.conversations.get(task, 0)):
            conversation_id = f"{task}-{index:03d}"
            fields, track = builder.build(task, index, np.random.default_rng([seed, task_number, index]))
            spec = ConversationSpec(id=conversation_id, task=task, user_audio=f"audio/{conversation_id}.wav", **fields)
            sphn.write_wav(str(output_dir / spec.user_audio), track, SAMPLE_RATE)
            metadata_file = f"conversations/{conversation_id}.json"
            (output_dir / metadata_file).write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
            listed.append(metadata_file)
    manifest = {"seed": seed, "tts": config.tts, "sample_rate": SAMPLE_RATE,
                "counts": {task: config.conversations.get(task, 0) for task in TASKS}, "conversations": listed}
    (output_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def load_test_set(directory: str | Path) -> list[dict]:
    """The conversations' metadata of a set on disk (built here or brought by a user), in manifest order.

    Refused with TestSetMissingFilesError listing every missing file (manifest, metadata, audio), or
    with TestSetError naming the file whose content is bad.
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise TestSetMissingFilesError(directory, [MANIFEST])
    manifest = _read_json(manifest_path)
    listed = manifest.get("conversations") if isinstance(manifest, dict) else None
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        raise TestSetError(f"{manifest_path}: expected 'conversations': a list of metadata files")
    missing = [name for name in listed if not (directory / name).is_file()]
    conversations = []
    for name in listed:
        if name in missing:
            continue
        try:
            spec = ConversationSpec.model_validate(_read_json(directory / name))
        except pydantic.ValidationError as exc:
            raise TestSetError(describe_validation_error(str(directory / name), exc)) from None
        if not (directory / spec.user_audio).is_file():
            missing.append(spec.user_audio)
        conversations.append(spec.model_dump(mode="json"))
    if missing:
        raise TestSetMissingFilesError(directory, missing)
    duplicated = sorted(name for name, count in collections.Counter(c["id"] for c in conversations).items()
                        if count > 1)
    if duplicated:
        raise TestSetError(f"{manifest_path}: conversation id(s) listed more than once: {duplicated}")
    return conversations


def read_user_audio(directory: str | Path, conversation: dict) -> np.ndarray:
    """The conversation's user track as float32 mono at 24 kHz ([N]); other rates are resampled, channels mixed."""
    samples, _ = sphn.read(str(Path(directory) / conversation["user_audio"]), sample_rate=SAMPLE_RATE)
    return np.asarray(samples, np.float32).mean(axis=0)


def _read_json(path: Path) -> tp.Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TestSetError(f"{path}: not valid JSON: {exc}") from None
