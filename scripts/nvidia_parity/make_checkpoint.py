"""Write the small deterministic PersonaPlex checkpoint on which NVIDIA's reference tokens are made.

    .venv/bin/python scripts/nvidia_parity/make_checkpoint.py tests/golden/personaplex-toy

The real architecture at a toy size, in the released file layout: the LM and Mimi safetensors
with moshi 0.1's tensor names (the layout NVIDIA's fork loads strictly), the demo tokenizer, one
voice sample (voices/NATF0.wav, over 15 s of espeak-ng speech, not normalised: the loaders normalise it). The
prompt codes are NVIDIA's fixed ones, because NVIDIA's code uses them whatever the Mimi weights.
`run_nvidia.py` then adds NVIDIA's outputs. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import safetensors.torch
import sphn
import torch

from plexray.audio.espeak import synthesize
from plexray.model import architectures, layout
from plexray.model.demo import DEMO_VOICES, DEMO_TEXT_VOCAB, VOICE_SAMPLE_TEXT, build_demo_mimi, train_tokenizer
from plexray.model.prompt import SAMPLE_RATE, PromptCodes

SEED = 20261201
VOICE = "NATF0"
VOICE_REPEATS, MIN_VOICE_S = 3, 15.0  # the voice sample: its text said 3 times, at least 15 s
TINY_LM = dict(dim=32, num_heads=2, num_layers=2, depformer_dim=16, depformer_dim_feedforward=66,
               depformer_num_heads=2, depformer_num_layers=1)


def _compact(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in bfloat16 (as the real repos store them): half the size in git, and both
    NVIDIA's code and plexray widen them exactly to the float32 the parity runs in."""
    return {name: (t.to(torch.bfloat16) if t.is_floating_point() else t).contiguous() for name, t in state.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    directory = parser.parse_args().directory
    (directory / layout.VOICES_DIR).mkdir(parents=True, exist_ok=True)

    train_tokenizer(directory / layout.TOKENIZER_FILE)
    mimi = build_demo_mimi(SEED)
    safetensors.torch.save_file(_compact(layout.to_release_layout(mimi.state_dict())), str(directory / layout.MIMI_FILE))

    torch.manual_seed(SEED)
    lm_kwargs = architectures.demo_lm_kwargs("personaplex", text_card=DEMO_TEXT_VOCAB) | TINY_LM
    lm = architectures.build_lm(lm_kwargs, device="cpu", dtype=torch.float32)
    safetensors.torch.save_file(_compact(layout.to_release_layout(lm.state_dict())), str(directory / layout.LM_FILE))

    # Longer than Mimi's 10 s streaming window: the voice prompt's codes past it are compared too.
    voice = np.concatenate([synthesize(VOICE_SAMPLE_TEXT, DEMO_VOICES[VOICE]) for _ in range(VOICE_REPEATS)])
    assert len(voice) >= MIN_VOICE_S * SAMPLE_RATE, f"voice sample of {len(voice) / SAMPLE_RATE:.1f} s"
    sphn.write_wav(str(directory / layout.VOICES_DIR / f"{VOICE}.wav"), voice, SAMPLE_RATE)
    metadata = {"family": "personaplex", "lora": False, "mimi_config": architectures.demo_mimi_config(),
                "prompt_codes": PromptCodes.real_mimi().to_json()}
    (directory / layout.METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    (directory / layout.CONFIG_FILE).write_text(json.dumps(dict(lm_kwargs, model_type="moshi"), indent=2))
    print(f"wrote {directory}")


if __name__ == "__main__":
    main()
