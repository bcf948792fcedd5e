"""End to end on the real local Ray cluster: generate, inspect rows, resume after damage, export, import."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from plexray.audio.espeak import EspeakVoice, synthesize
from plexray.config import load_config
from plexray.data.moshi_finetune import export_dataset, import_dataset
from plexray.data.personas import load_library
from plexray.data.pipeline import generate
from plexray.data.shards import shard_files
from plexray.data.tts import trim_silence
from plexray.model.architectures import TEXT_END_OF_PADDING_ID, TEXT_PADDING_ID
from plexray.model.prompt import SAMPLE_RATE, SILENCE_FRAMES
from plexray.speech.align import PocketSphinxAligner
from plexray.settings import PlexrayConfig

OVERRIDES = [
    "data.library.personas=[angry-alex, nervous-nancy]",
    "data.library.scenarios=[wrong-order, first-time-order]",
    "data.dialogue.min_turns=4", "data.dialogue.max_turns=4",
    "data.speech.max_duration_s=12",
    "data.encode.batch_size=1", "data.rows_per_shard=1",
]


def _config(output_dir, *extra):
    return load_config(PlexrayConfig, None, [f"data.output_dir={output_dir}", *OVERRIDES, *extra])


def _rows(output_dir):
    rows = []
    for path in shard_files(output_dir):
        rows += pq.read_table(path).to_pylist()
    return rows


def _codes(row):
    return np.asarray(row["codes"]["data"] if isinstance(row["codes"], dict) else row["codes"]).reshape(17, -1)


@pytest.fixture(scope="module")
def dataset(ray_cluster, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("dataset")
    manifest = generate(_config(output_dir))
    return output_dir, manifest


def test_generate_writes_reconciled_shards_and_manifest(dataset):
    output_dir, manifest = dataset
    assert manifest["status"] == "complete" and manifest["reconciled"]
    assert (manifest["planned"], manifest["written"], manifest["rejected"]) == (4, 4, 0)
    assert manifest["per_persona"] == {"angry-alex": 2, "nervous-nancy": 2}
    assert manifest["per_scenario"] == {"first-time-order": 2, "wrong-order": 2}
    assert manifest["alignment"] == "word" and manifest["hours_of_audio"] > 0
    assert set(manifest["versions"]) >= {"ray", "torch", "moshi", "espeak-ng"}
    assert json.loads((output_dir / "manifest.json").read_text())["written"] == 4
    assert all(path.name.startswith("part-") for path in shard_files(output_dir))
    offsets = manifest["stats"]["floor_transfer_offsets"]
    assert offsets["count"] > 0 and set(offsets) == {"count", "median_ms", "share_0_200_ms", "share_overlaps"}
    for plot in ("durations", "turns", "gaps", "offsets"):
        assert (output_dir / "stats" / f"{plot}.png").stat().st_size > 1000


def test_word_timings_come_from_the_aligner_and_interpolated_words_are_counted(dataset):
    """espeak-ng speaks whole turns and the words are timed by forced alignment (plexray.speech.align)."""
    output_dir, manifest = dataset
    library = load_library()
    aligner = PocketSphinxAligner()
    rows = _rows(output_dir)
    counted = 0
    for row in rows:
        transcript = json.loads(row["transcript"])
        counted += sum(entry["interpolated_words"] for entry in transcript)
        # The first agent turn spoken whole (not cut short by a barge-in): its words, as the aligner times them
        turn = next(t for t in transcript if t["speaker"] == "agent" and t["kind"] == "turn" and not t["interrupted"])
        voice = library.personas[row["persona_id"]].voice
        samples = trim_silence(synthesize(turn["text"], EspeakVoice("en-us", voice.variant, voice.pitch, voice.rate)))
        aligned = aligner.align(samples, SAMPLE_RATE, [word for word, _, _ in turn["words"]])
        assert [[w.text, turn["start_s"] + w.start_s, turn["start_s"] + w.end_s] for w in aligned.words] == [
            [word, pytest.approx(start, abs=0.002), pytest.approx(end, abs=0.002)] for word, start, end in turn["words"]]
        # sentence speech: words run together (word-by-word synthesis left 45 ms or more between every two)
        assert any(b[1] - a[2] < 0.03 for a, b in zip(turn["words"], turn["words"][1:]))
    assert manifest["interpolated_words"] == manifest["stats"]["alignment"]["interpolated_words"] == counted
    assert manifest["stats"]["alignment"]["words"] > 0


def test_rows_follow_the_contract(dataset, demo_bundle, ray_cluster):
    output_dir, _ = dataset
    rows = ray_cluster.data.read_parquet(str(output_dir / "shards")).take_all()
    assert len(rows) == 4 and len({row["id"] for row in rows}) == 4
    silence, sine = np.array(demo_bundle.prompt_codes.silence), np.array(demo_bundle.prompt_codes.sine)
    for row in rows:
        codes = row["codes"]
        assert codes.dtype == np.int16 and codes.shape == (17, row["num_frames"])
        start, end = row["prompt_start"], row["prompt_end"]
        assert start == 0 and 0 < end < row["num_frames"]
        assert row["system_prompt"].startswith("<system> ") and row["system_prompt"].endswith(" <system>")
        prompt_tokens = demo_bundle.tokenizer.encode(row["system_prompt"])
        text_start = end - SILENCE_FRAMES - len(prompt_tokens)
        assert codes[0, text_start:end - SILENCE_FRAMES].tolist() == prompt_tokens
        assert (codes[0, :text_start] == TEXT_PADDING_ID).all()  # voice prompt + silence: padding
        assert (codes[9:, :end] == sine[:, None]).all()  # user stream: the 440 Hz sine throughout the prompt
        assert (codes[1:9, text_start:end] == silence[:, None]).all()
        assert text_start > SILENCE_FRAMES, "the agent's voice prompt comes first"
        conversation = codes[:, end:]
        text = conversation[0]
        assert (text == TEXT_END_OF_PADDING_ID).any() and (text > TEXT_PADDING_ID).sum() > 5
        assert len(np.unique(conversation[1])) > 5 and len(np.unique(conversation[9])) > 5  # both channels speak
        transcript = json.loads(row["transcript"])
        assert {turn["speaker"] for turn in transcript} == {"agent", "user"}
        assert all(set(turn) >= {"speaker", "text", "start_s", "end_s"} for turn in transcript)
        assert row["duration_s"] == pytest.approx(row["num_frames"] / 12.5)


def test_resume_after_interruption_writes_no_duplicates_and_loses_nothing(dataset):
    output_dir, _ = dataset
    before = {row["id"]: _codes(row) for row in _rows(output_dir)}
    shards = shard_files(output_dir)
    assert len(shards) == 4
    shards[0].unlink()  # a run killed before this shard was written
    shards[1].write_bytes(shards[1].read_bytes()[:200])  # ... and while writing this one

    manifest = generate(_config(output_dir))
    assert manifest["run"]["skipped_existing"] == 2 and manifest["run"]["attempted"] == 2
    assert manifest["reconciled"] and manifest["written"] == 4
    after = _rows(output_dir)
    assert sorted(row["id"] for row in after) == sorted(before)  # each id exactly once
    for row in after:  # regenerated conversations are the same conversations
        assert np.array_equal(_codes(row), before[row["id"]])
    quarantined = (output_dir / "quarantine" / "files.jsonl").read_text()
    assert shards[1].name in quarantined and "unreadable shard" in quarantined

    rerun = generate(_config(output_dir))  # nothing left to do
    assert rerun["run"]["attempted"] == 0 and len(_rows(output_dir)) == 4


def test_export_then_import_with_a_corrupt_recording(dataset, tmp_path):
    output_dir, _ = dataset
    config = _config(output_dir)
    exported = export_dataset(output_dir, tmp_path / "mf", config.model)
    assert exported["exported"] == 4
    index = tmp_path / "mf" / "dataset.jsonl"
    entries = [json.loads(line) for line in index.read_text().splitlines()]
    first = tmp_path / "mf" / entries[0]["path"]
    alignments = json.loads(first.with_suffix(".json").read_text())["alignments"]
    assert {speaker for _, _, speaker in alignments} == {"SPEAKER_MAIN", "SPEAKER_OTHER"}

    (tmp_path / "mf" / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    with index.open("a") as handle:
        handle.write(json.dumps({"path": "audio/broken.wav", "duration": 3.0}) + "\n")
    imported = import_dataset(index, _config(tmp_path / "imported"), "You are a coffee-shop customer.")
    assert imported["reconciled"] and (imported["written"], imported["rejected"]) == (4, 1)
    assert imported["rejects_by_reason"] == {"corrupt_audio": 1}
    rows = _rows(tmp_path / "imported")
    assert all(_codes(row).shape[0] == 17 and row["prompt_end"] > 0 for row in rows)


def test_a_run_that_rejects_everything_exits_non_zero_naming_the_cause(ray_cluster, tmp_path, capsys):
    """The dialogue endpoint is down (nothing listens on the port): every conversation is rejected."""
    import socket

    from plexray.cli import main

    with socket.socket() as unused:  # a port nobody listens on: connections are refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    overrides = [f"data.output_dir={tmp_path}", *OVERRIDES, "data.dialogue.backend=llm",
                 f"data.dialogue.llm.base_url=http://127.0.0.1:{port}/v1", "data.dialogue.llm.max_retries=0",
                 "data.max_attempts=1"]
    assert main(["data", "generate", *[argument for item in overrides for argument in ("--set", item)]]) == 2
    error = capsys.readouterr().err.strip()
    assert "4 of 4 planned conversations (100%) were rejected" in error and "synthesize error LLMError" in error
    assert "Traceback" not in error
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "too_many_rejects" and manifest["rejected"] == 4
