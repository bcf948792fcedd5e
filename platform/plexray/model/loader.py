"""Load a checkpoint into a ModelBundle: LM, Mimi, text tokenizer, voices and prompt codes.

The LM is built on the meta device and its weights are assigned from the safetensors file, so a
7B model is allocated once. Every file is checked against the architecture before any tensor is
assigned: a bad checkpoint is reported by file name and problem, not by a torch stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import typing as tp
from pathlib import Path

import safetensors
import safetensors.torch
import sentencepiece
import torch
from moshi.models.compression import MimiModel
from moshi.models.lm import LMModel
from moshi.models import loaders
from moshi.utils import compile as moshi_compile

from plexray.errors import CheckpointError
from plexray.model import architectures, layout, reference
from plexray.model.prompt import PromptCodes, derive_prompt_codes
from plexray.model.voices import VoicePrompt, discover_voices

# Keys of a moshi-style config.json that describe files or generation, not the LM architecture.
_NON_ARCHITECTURE_KEYS = ("moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name",
                          "model_type", "lm_gen_config", "tts_config", "stt_config", "model_id",
                          "plexray", "lora_rank", "lora_scaling")


@dataclasses.dataclass
class ModelBundle:
    """Everything needed to run or train one model."""

    family: str
    lm: LMModel
    mimi: MimiModel
    tokenizer: sentencepiece.SentencePieceProcessor
    voices: dict[str, VoicePrompt]
    prompt_codes: PromptCodes
    lm_kwargs: dict  # the architecture, as LMModel keyword arguments
    mimi_config: dict
    files: reference.CheckpointFiles

    @property
    def spec(self) -> architectures.FamilySpec:
        return architectures.family_spec(self.family)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """What a checkpoint's config.json says, with the platform's defaults filled in."""

    family: str
    lm_kwargs: dict
    mimi_config: dict
    prompt_codes: PromptCodes | None  # None: derive from Mimi


def read_checkpoint_config(files: reference.CheckpointFiles, family: str | None, lm_config: dict | None = None,
                           mimi_config: dict | None = None) -> CheckpointConfig:
    """Decide the family and architecture from config.json, the caller's choice and the repo name.

    Architecture, in order: what config.json carries, else `lm_config` / `mimi_config`, else the
    family's released architecture. Prompt codes: the ones a plexray checkpoint recorded, derived
    from Mimi for a plexray checkpoint with its own Mimi, else NVIDIA's fixed codes (which NVIDIA's
    code uses for any checkpoint).
    """
    raw: dict = {}
    if files.config is not None:
        try:
            raw = json.loads(files.config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{files.config}: cannot read config: {exc}") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{files.config}: expected a JSON object")
    plexray_section = raw.get("plexray", {})
    if raw.get("lora") or plexray_section.get("lora"):
        raise CheckpointError(
            f"{files.config}: declares LoRA layers; load the base model with the adapter, or a merged "
            "checkpoint (whose config declares no LoRA)")

    declared = plexray_section.get("family")
    if declared is None and files.hub_repo is not None:
        declared = "personaplex" if "personaplex" in files.hub_repo.lower() else "moshi"
    chosen = family or declared or "personaplex"
    if chosen not in architectures.FAMILY_SPECS:
        raise CheckpointError(f"{files.source}: unknown family {chosen!r}; expected one of "
                              f"{sorted(architectures.FAMILY_SPECS)}")
    if family and declared and family != declared:
        raise CheckpointError(f"{files.source}: checkpoint is family {declared!r} but {family!r} was requested")

    if "dim" in raw:  # a moshi-style config.json that carries the LM architecture
        lm_kwargs = {k: v for k, v in raw.items() if k not in _NON_ARCHITECTURE_KEYS and k != "lora"}
    else:  # e.g. nvidia/personaplex-7b-v1: its config.json has no architecture fields
        lm_kwargs = lm_config or architectures.full_lm_kwargs(chosen)
    mimi_config = plexray_section.get("mimi_config") or mimi_config or architectures.full_mimi_config()
    codes_json = plexray_section.get("prompt_codes")
    if codes_json is not None:
        prompt_codes = PromptCodes.from_json(codes_json)
    elif "mimi_config" in plexray_section:
        prompt_codes = None  # a non-real Mimi without recorded codes: derive them
    else:
        prompt_codes = PromptCodes.real_mimi()
    return CheckpointConfig(chosen, lm_kwargs, mimi_config, prompt_codes)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a whole safetensors file, turning corruption and truncation into a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        return safetensors.torch.load_file(str(path))
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def check_state(path: Path, state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]],
                what: str) -> None:
    """Compare names and shapes; the message lists what is missing, unexpected or mis-shaped."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [f"{k}: checkpoint {list(state[k].shape)} vs {what} {list(expected[k])}"
                  for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            parts.append(f"{label}: {shown}")
    raise CheckpointError(f"{path}: does not match the {what} architecture; " + "; ".join(parts))


def _depformer_steps(state: dict[str, torch.Tensor]) -> int:
    return sum(1 for name in state if name.startswith("linears.") and name.endswith(".weight"))


def load_lm(path: Path, lm_kwargs: dict, family: str, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32, **overrides: tp.Any) -> LMModel:
    lm = architectures.build_lm(lm_kwargs, "meta", dtype, **overrides)
    state = read_safetensors(path)
    steps = _depformer_steps(state)
    if steps and steps != lm.dep_q:
        other = [f for f, s in architectures.FAMILY_SPECS.items() if s.dep_q == steps]
        raise CheckpointError(
            f"{path}: has {steps} depformer steps ({' or '.join(other) or 'unknown family'}), "
            f"but family {family!r} has {lm.dep_q}; pass the right family")
    check_state(path, state, layout.expected_release_shapes(lm), f"{family} LM")
    state = {name: (t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device))
             for name, t in state.items()}
    lm.load_state_dict(state, strict=True, assign=True)
    return lm.eval()


def load_mimi(path: Path, mimi_config: dict, device: str | torch.device = "cpu") -> MimiModel:
    """Mimi from a file with moshi 0.2's tensor names or the released moshi 0.1 names (moshi's load hook
    converts those: `self_attn.in_proj_weight` -> `self_attn.in_projs.0.weight`)."""
    mimi = loaders.get_mimi(None, mimi_config, device="cpu", num_codebooks=architectures.NUM_AUDIO_CODEBOOKS)
    state = read_safetensors(path)
    released, current = layout.expected_release_shapes(mimi), layout.expected_shapes(mimi)
    in_release_layout = any(name in released and name not in current for name in state)
    check_state(path, state, released if in_release_layout else current, "Mimi")
    mimi.load_state_dict(state, strict=True)
    return mimi.to(device).eval()


def load_tokenizer(path: Path, text_card: int) -> sentencepiece.SentencePieceProcessor:
    try:
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a sentencepiece model ({exc})") from None
    if tokenizer.vocab_size() != text_card:
        raise CheckpointError(f"{path}: vocabulary of {tokenizer.vocab_size()} pieces, the LM expects {text_card}")
    return tokenizer


def set_torch_compile(enabled: bool) -> None:
    """moshi compiles its rope, gating and norms lazily with torch.compile.

    Worth it on GPU; on CPU the first call of each new shape costs seconds of compilation, so it is
    off unless asked for. The switch is process-wide, as moshi's is.
    """
    moshi_compile._compile_disabled = not enabled


def load_model(
    ref: str,
    family: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | None = None,
    compile: bool = False,
    lm_config: dict | None = None,
    mimi_config: dict | None = None,
    **lm_overrides: tp.Any,
) -> ModelBundle:
    """Load a model reference (`hf://owner/repo[@rev]`, a local directory, or `demo`).

    `lm_config` / `mimi_config`: the architecture of a checkpoint whose config.json has none (see
    `read_checkpoint_config`). `lm_overrides` are extra LMModel arguments that do not change
    tensor shapes (e.g. `gradient_checkpointing=True`).
    """
    set_torch_compile(compile)
    files = reference.resolve(ref, cache_dir)
    config = read_checkpoint_config(files, family, lm_config, mimi_config)
    lm = load_lm(files.lm, config.lm_kwargs, config.family, device, dtype, **lm_overrides)
    mimi = load_mimi(files.mimi, config.mimi_config, device)
    tokenizer = load_tokenizer(files.tokenizer, config.lm_kwargs["text_card"])
    prompt_codes = config.prompt_codes or derive_prompt_codes(mimi)
    return ModelBundle(
        family=config.family, lm=lm, mimi=mimi, tokenizer=tokenizer, voices=discover_voices(files.voices),
        prompt_codes=prompt_codes, lm_kwargs=config.lm_kwargs, mimi_config=config.mimi_config, files=files,
    )
