"""Loading checkpoints: the demo through every reference kind, and clear errors for bad ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from plexray.errors import CheckpointError
from plexray.model import load_model, reference
from plexray.model.prompt import build_prompt_frames, wrap_system_prompt
from plexray.model.voice_prefill import read_voice_prefill
from plexray.model.voices import encode_voice
from replica import GOLDEN_DIR, make_hub_cache


@pytest.fixture
def hub_offline(monkeypatch):
    """HF_HUB_OFFLINE=1, as huggingface_hub reads it (its constant is set when it is imported)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.extracted"))
    return target


def test_demo_bundle_runs_forward_and_mimi(demo_bundle):
    bundle = demo_bundle
    assert bundle.family == "personaplex" and bundle.lm.dep_q == 16
    assert sorted(bundle.voices) == ["NATF0", "NATM0", "VARF0", "VARM0"]
    voice = bundle.voices["NATF0"]
    codes = encode_voice(bundle.mimi, voice.load_wav())[None]
    assert codes.shape[:2] == (1, 8) and codes.min() >= 0 and codes.max() < 2048
    assert len(set(codes[0, 0].tolist())) > 5  # speech gives varied codes, not one constant
    prefill = read_voice_prefill(voice.pt_path, bundle.lm)  # NVIDIA's layout: one input per frame but the first
    assert prefill.embeddings.shape == (codes.shape[2] - 1, bundle.lm.dim)
    frames = build_prompt_frames(codes[0], bundle.tokenizer.encode(wrap_system_prompt("Be kind.")),
                                 bundle.prompt_codes)
    out = bundle.lm(frames.codes[None])
    assert out.logits.shape == (1, 16, frames.num_frames, 2048)
    assert torch.isfinite(out.logits[out.mask]).all()
    audio = bundle.mimi.decode(codes)
    assert audio.shape[-1] == codes.shape[-1] * 1920


def test_prompt_layout_order(demo_bundle):
    codes = torch.arange(8 * 5).view(8, 5)
    frames = build_prompt_frames(codes, [11, 12, 13], demo_bundle.prompt_codes)
    silence, sine = demo_bundle.prompt_codes.silence, demo_bundle.prompt_codes.sine
    assert frames.codes.shape == (17, 5 + 6 + 3 + 6)
    assert torch.equal(frames.codes[1:9, :5], codes)
    assert frames.codes[1:9, 5:].T.tolist() == [list(silence)] * 15
    assert frames.codes[9:].T.tolist() == [list(sine)] * 20
    assert frames.codes[0].tolist() == [3] * 11 + [11, 12, 13] + [3] * 6
    assert wrap_system_prompt("hi") == "<system> hi <system>"


def test_demo_ref_builds_and_reuses_default_dir(demo_checkpoint):
    assert reference.resolve("demo").lm.parent == demo_checkpoint


@pytest.mark.parametrize("repo", ["nvidia/personaplex-7b-v1"])
def test_hub_reference_loads_from_local_cache_offline(demo_checkpoint, tmp_path, hub_offline, repo):
    make_hub_cache(tmp_path / "hub", repo, demo_checkpoint)
    bundle = load_model(f"hf://{repo}", cache_dir=str(tmp_path / "hub"))
    assert bundle.family == "personaplex"
    assert bundle.files.hub_repo == repo
    assert "snapshots" in str(bundle.files.lm)
    assert sorted(bundle.voices) == ["NATF0", "NATM0", "VARF0", "VARM0"]


def test_moshi_family_loads_from_hub_cache(moshi_demo_checkpoint, tmp_path, hub_offline):
    make_hub_cache(tmp_path / "hub", "kyutai/moshiko-pytorch-bf16", moshi_demo_checkpoint)
    bundle = load_model("hf://kyutai/moshiko-pytorch-bf16", cache_dir=str(tmp_path / "hub"))
    assert bundle.family == "moshi" and bundle.lm.dep_q == 8


def test_bfloat16_load(demo_checkpoint):
    bundle = load_model(str(demo_checkpoint), dtype=torch.bfloat16)
    assert bundle.lm.text_emb.weight.dtype == torch.bfloat16


def test_unreachable_hub_without_cache_is_clear(tmp_path, hub_offline):
    with pytest.raises(CheckpointError, match="model.safetensors.*not in the cache"):
        load_model("hf://nvidia/personaplex-7b-v1", cache_dir=str(tmp_path / "empty"))


def test_bad_hub_reference():
    with pytest.raises(CheckpointError, match="hf://owner/repo"):
        load_model("hf://just-a-name")


def test_missing_directory_and_file(demo_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_model(str(tmp_path / "nowhere"))
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    (broken / reference.MIMI_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{reference.MIMI_FILE}: missing checkpoint file"):
        load_model(str(broken))


def test_truncated_safetensors(demo_checkpoint, tmp_path):
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    lm_file = broken / reference.LM_FILE
    lm_file.write_bytes(lm_file.read_bytes()[: lm_file.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: not a readable safetensors file"):
        load_model(str(broken))


def test_streamed_tensors_equal_safetensors_own_reader(demo_checkpoint):
    """The loader reads each tensor's bytes itself (no memory map): the same names, dtypes and values as
    safetensors' own reader, for float32 (the demo) and bfloat16 (the golden checkpoint, NVIDIA's dtype)."""
    import safetensors.torch

    from plexray.model.loader import stream_safetensors

    for path in (demo_checkpoint / reference.LM_FILE, GOLDEN_DIR / reference.LM_FILE):
        expected = safetensors.torch.load_file(str(path))
        streamed = dict(stream_safetensors(path))
        assert list(streamed) == list(expected), path
        for name, tensor in expected.items():
            assert streamed[name].dtype == tensor.dtype and torch.equal(streamed[name], tensor), f"{path}: {name}"


def test_corrupted_safetensors_header(demo_checkpoint, tmp_path):
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    mimi_file = broken / reference.MIMI_FILE
    mimi_file.write_bytes(b"\xff" * 64 + mimi_file.read_bytes()[64:])
    with pytest.raises(CheckpointError, match="tokenizer-e351c8d8-checkpoint125.safetensors: not a readable"):
        load_model(str(broken))


def test_shape_mismatch_names_tensor(demo_checkpoint, tmp_path):
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    config = json.loads((broken / "config.json").read_text())
    config["dim"] = 96
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"does not match the personaplex LM architecture.*shape mismatch: "
                                              r"depformer_in.0.weight: checkpoint \[64, 128\] vs"):
        load_model(str(broken))


def test_wrong_family(demo_checkpoint, moshi_demo_checkpoint):
    with pytest.raises(CheckpointError, match="family 'personaplex' but 'moshi' was requested"):
        load_model(str(demo_checkpoint), family="moshi")
    assert json.loads((moshi_demo_checkpoint / "plexray.json").read_text())["family"] == "moshi"


def test_wrong_family_detected_from_tensors(moshi_demo_checkpoint, tmp_path):
    broken = copy_checkpoint(moshi_demo_checkpoint, tmp_path / "ckpt")
    config, metadata = (json.loads((broken / name).read_text()) for name in ("config.json", "plexray.json"))
    metadata["family"] = "personaplex"
    config["dep_q"] = 16
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "plexray.json").write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match="has 8 depformer steps \\(moshi\\), but family 'personaplex' has 16"):
        load_model(str(broken))


def test_lora_declared_checkpoint_is_refused(demo_checkpoint, tmp_path):
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    config = json.loads((broken / "config.json").read_text())
    config["lora"] = True
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="declares LoRA layers"):
        load_model(str(broken))


def test_tokenizer_vocab_mismatch(demo_checkpoint, tmp_path):
    broken = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    (broken / reference.TOKENIZER_FILE).write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="tokenizer_spm_32k_3.model: not a sentencepiece model"):
        load_model(str(broken))


def test_checkpoint_written_before_plexray_json_still_loads(demo_checkpoint, tmp_path):
    """Older plexray checkpoints kept the metadata in config.json under "plexray" (a demo cached then is
    reused as it is): without it their toy Mimi would be built at full size and fail to load."""
    old = copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    config = json.loads((old / "config.json").read_text())
    config["plexray"] = json.loads((old / "plexray.json").read_text())
    (old / "config.json").write_text(json.dumps(config))
    (old / "plexray.json").unlink()
    bundle = load_model(str(old))
    assert bundle.family == "personaplex" and bundle.prompt_codes == load_model(str(demo_checkpoint)).prompt_codes


def test_streamed_weights_equal_the_file(demo_checkpoint):
    import safetensors.torch

    from plexray.model import layout

    lm = load_model(str(demo_checkpoint), dtype=torch.bfloat16).lm
    stored = safetensors.torch.load_file(str(demo_checkpoint / reference.LM_FILE))
    loaded = layout.to_release_layout(lm.state_dict())
    assert loaded.keys() == stored.keys()
    assert all(torch.equal(loaded[name], stored[name].to(torch.bfloat16)) for name in stored)
