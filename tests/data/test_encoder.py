"""The encoder stage without Ray: batching, alignment strategies and the prompt layout."""

import numpy as np
import pytest

from plexray.data.codec import Codec
from plexray.data.config import DataConfig
from plexray.data.personas import load_library
from plexray.data.plan import plan_conversations
from plexray.data.stages import ConversationEncoder, rows_to_batch, synthesize_item
from plexray.model.architectures import TEXT_PADDING_ID


@pytest.fixture(scope="module")
def audio_rows(tmp_path_factory):
    config = DataConfig.model_validate({
        "library": {"personas": ["friendly-fred", "timid-tom"], "scenarios": ["morning-regular"]},
        "dialogue": {"min_turns": 4, "max_turns": 4}, "speech": {"max_duration_s": 10}})
    library = load_library(personas=["friendly-fred", "timid-tom"], scenarios=["morning-regular"])
    output_dir = tmp_path_factory.mktemp("encoder")
    rows = [row for item in plan_conversations(config, library)
            for row in synthesize_item(vars(item), config, library, output_dir)]
    assert len(rows) == 2
    return rows, output_dir


def _codes(row):
    codes = row["codes"]
    return np.asarray(codes["data"] if isinstance(codes, dict) else codes).reshape(17, -1)


def _encoder(demo_bundle, output_dir, **data):
    codec = Codec(demo_bundle.mimi, demo_bundle.tokenizer, demo_bundle.prompt_codes)
    return ConversationEncoder(None, DataConfig.model_validate(data), str(output_dir), codec=codec)


def test_batched_and_single_encoding_give_the_same_layout(demo_bundle, audio_rows):
    rows, output_dir = audio_rows
    encoder = _encoder(demo_bundle, output_dir)
    together = encoder(rows_to_batch(rows)).to_pylist()
    alone = [encoder(rows_to_batch([row])).to_pylist()[0] for row in rows]
    for a, b in zip(together, alone):
        assert a["id"] == b["id"] and a["num_frames"] == b["num_frames"] and a["prompt_end"] == b["prompt_end"]
        codes_a, codes_b = _codes(a), _codes(b)
        assert np.array_equal(codes_a[0], codes_b[0])  # text and layout identical
        # semantic codebooks agree; deep residual codebooks may flip on float rounding across batch sizes
        assert (codes_a[1] == codes_b[1]).mean() > 0.95 and (codes_a[9] == codes_b[9]).mean() > 0.95


def test_strategies_place_the_same_text_differently(demo_bundle, audio_rows):
    rows, output_dir = audio_rows
    texts = {}
    for strategy in ("word", "onset", "uniform"):
        row = _encoder(demo_bundle, output_dir, alignment=strategy)(rows_to_batch(rows[:1])).to_pylist()[0]
        assert row["alignment"] == strategy
        codes = _codes(row)
        texts[strategy] = codes[0, row["prompt_end"]:]
    tokens = {name: text[text > TEXT_PADDING_ID] for name, text in texts.items()}
    assert len(tokens["word"]) == len(tokens["onset"]) == len(tokens["uniform"]) > 10  # no text lost
    assert not np.array_equal(texts["word"], texts["onset"]) and not np.array_equal(texts["onset"], texts["uniform"])


def test_gpu_actors_need_a_cuda_device():
    with pytest.raises(ValueError, match="set device: cuda"):
        DataConfig.model_validate({"encode": {"num_gpus_per_actor": 0.5}})


def test_a_word_after_the_end_of_the_audio_is_dropped_not_the_conversation(demo_bundle, audio_rows):
    """A transcript that outlasts the audio: the late word is counted in the row, the conversation is kept."""
    import json

    from plexray.data.rejects import read_rejects
    from plexray.data.stats import conversation_stats

    rows, output_dir = audio_rows
    row = dict(rows[0])
    transcript = json.loads(row["transcript"])
    audio_end_s = len(row["agent_audio"]) / 24000
    agent_turn = next(turn for turn in reversed(transcript) if turn["speaker"] == "agent")
    agent_turn["words"] = [*agent_turn.get("words", []), ["goodbye", audio_end_s + 2.0, audio_end_s + 2.5]]
    row["transcript"] = json.dumps(transcript)

    table = _encoder(demo_bundle, output_dir)(rows_to_batch([row]))
    assert str(row["id"]) not in read_rejects(output_dir)
    written = table.to_pylist()
    assert [(r["id"], r["late_words"]) for r in written] == [(row["id"], 1)] and written[0]["dropped_text_tokens"] >= 1
    assert conversation_stats(table)["alignment"]["late_words"] == 1
