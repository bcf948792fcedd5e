"""Load a checkpoint into a ModelBundle: LM, Mimi, text tokenizer, voices and prompt codes.

The LM is built on the meta device and its weights are read from the safetensors file one tensor at
a time, each converted to the target dtype and device and assigned as is: the weights are allocated
once, in their final form, beside at most one tensor in flight (the file is never read whole).
Every file's header is checked against the architecture before any tensor is read: a bad
checkpoint is reported by file name and problem, not by a torch stack trace.
"""

from __future__ import annotations

import dataclasses
import json
import typing as tp
from pathlib import Path

import safetensors
import sentencepiece
import torch
from moshi.models.compression import MimiModel
from moshi.models.lm import LMModel
from moshi.models import loaders

from plexray.errors import CheckpointError
from plexray.model import architectures, layout, reference
from plexray.model.compile import set_torch_compile
from plexray.model.prompt import PromptCodes, derive_prompt_codes
from plexray.model.mimi_ring import use_ring
from plexray.model.voices import VoicePrompt, discover_voices

# Where plexray checkpoints written before plexray.json kept their metadata: inside config.json,
# which moshi's own loaders then refuse. Still read, so that those checkpoints (and a demo
# checkpoint cached before the change, which is reused as it is) keep loading.
LEGACY_METADATA_KEY = "plexray"
# Keys of a moshi-style config.json that describe files or generation, not the LM architecture.
_NON_ARCHITECTURE_KEYS = ("moshi_name", "mimi_name", "mimi_config_name", "tokenizer_name", "lora_name",
                          "model_type", "lm_gen_config", "tts_config", "stt_config", "model_id",
                          LEGACY_METADATA_KEY, "lora_rank", "lora_scaling")


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
    """Decide the family and architecture from config.json, plexray's metadata (plexray.json), the
    caller's choice and the repo name.

    Architecture, in order: what config.json carries, else `lm_config` / `mimi_config`, else the
    family's released architecture. Prompt codes: the ones a plexray checkpoint recorded, derived
    from Mimi for a plexray checkpoint with its own Mimi, else NVIDIA's fixed codes (which NVIDIA's
    code uses for any checkpoint).
    """
    raw = _read_json_object(files.config) if files.config is not None else {}
    metadata = _read_json_object(files.metadata) if files.metadata is not None else raw.get(LEGACY_METADATA_KEY, {})
    if raw.get("lora") or metadata.get("lora"):
        raise CheckpointError(
            f"{files.config}: declares LoRA layers; load the base model with the adapter, or a merged "
            "checkpoint (whose config declares no LoRA)")

    declared = metadata.get("family")
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
    mimi_config = metadata.get("mimi_config") or mimi_config or architectures.full_mimi_config()
    codes_json = metadata.get("prompt_codes")
    if codes_json is not None:
        prompt_codes = PromptCodes.from_json(codes_json)
    elif "mimi_config" in metadata:
        prompt_codes = None  # a non-real Mimi without recorded codes: derive them
    else:
        prompt_codes = PromptCodes.real_mimi()
    return CheckpointConfig(chosen, lm_kwargs, mimi_config, prompt_codes)


def _read_json_object(path: Path) -> dict:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def read_safetensors_header(path: Path) -> dict[str, torch.Tensor]:
    """Name -> a meta tensor of the stored shape and dtype, from the file's header alone."""
    def read(handle) -> dict[str, torch.Tensor]:
        header = {}
        for name in handle.keys():
            stored = handle.get_slice(name)
            if stored.get_dtype() not in _SAFETENSORS_DTYPES:
                raise CheckpointError(f"{path}: {name} is stored as {stored.get_dtype()}, which plexray does not load")
            header[name] = torch.empty(stored.get_shape(), dtype=_SAFETENSORS_DTYPES[stored.get_dtype()],
                                       device="meta")
        return header
    return _with_safetensors(path, read)


def stream_safetensors(path: Path, names: tp.Iterable[str] | None = None) -> tp.Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) one at a time, each a fresh CPU tensor (all names in the file by default).

    Each tensor's bytes are read from the file straight into the tensor's own memory. The file is not
    mapped (safetensors' own reader maps it, and every page read stays in this process's resident set
    until the mapping closes), so loading costs the tensors' memory and nothing beside it."""
    header = read_safetensors_header(path)  # safetensors checks the header's offsets first
    names = list(names) if names is not None else list(header)
    try:
        with open(path, "rb", buffering=0) as handle:
            header_bytes = int.from_bytes(handle.read(8), "little")
            offsets = {name: entry["data_offsets"] for name, entry in json.loads(handle.read(header_bytes)).items()
                       if name != "__metadata__"}
            data_start = 8 + header_bytes
            for name in names:
                begin, end = offsets[name]
                tensor = torch.empty(header[name].shape, dtype=header[name].dtype)
                handle.seek(data_start + begin)
                _read_exactly(handle, tensor.view(-1).view(torch.uint8).numpy(), path, name)
                yield name, tensor
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc}") from None


def _read_exactly(handle: tp.BinaryIO, target, path: Path, name: str) -> None:
    """Fill `target` (a writable byte buffer) from the file; a short file is a CheckpointError."""
    view, filled = memoryview(target), 0
    while filled < len(view):  # one read returns at most ~2 GB on Linux
        count = handle.readinto(view[filled:])
        if not count:
            raise CheckpointError(f"{path}: truncated: {name} needs {len(view)} bytes, the file has {filled}")
        filled += count


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (for small files: adapters; see `stream_safetensors`)."""
    return dict(stream_safetensors(path))


def _with_safetensors(path: Path, read: tp.Callable[[tp.Any], tp.Any]) -> tp.Any:
    """`read(handle)` on the opened file, turning corruption and truncation into a CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return read(handle)
    except (safetensors.SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


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


def _depformer_steps(names: tp.Iterable[str]) -> int:
    return sum(1 for name in names if name.startswith("linears.") and name.endswith(".weight"))


def load_lm(path: Path, lm_kwargs: dict, family: str, device: str | torch.device = "cpu",
            dtype: torch.dtype = torch.float32, **overrides: tp.Any) -> LMModel:
    lm = architectures.build_lm(lm_kwargs, "meta", dtype, **overrides)
    header = read_safetensors_header(path)
    steps = _depformer_steps(header)
    if steps and steps != lm.dep_q:
        other = [f for f, s in architectures.FAMILY_SPECS.items() if s.dep_q == steps]
        raise CheckpointError(
            f"{path}: has {steps} depformer steps ({' or '.join(other) or 'unknown family'}), "
            f"but family {family!r} has {lm.dep_q}; pass the right family")
    check_state(path, header, layout.expected_release_shapes(lm), f"{family} LM")
    # Each tensor in its final form as it arrives (a no-op when the file already has it), so that the
    # read copy is freed before the next one. moshi's load hook turns the released stacked projections
    # (`in_proj_weight`) into views of them (`in_projs.{i}.weight`): nothing is copied there.
    state = {name: (t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device))
             for name, t in stream_safetensors(path, header)}
    lm.load_state_dict(state, strict=True, assign=True)
    return lm.eval()


def load_mimi(path: Path, mimi_config: dict, device: str | torch.device = "cpu") -> MimiModel:
    """Mimi from a file with moshi 0.2's tensor names or the released moshi 0.1 names (moshi's load hook
    converts those: `self_attn.in_proj_weight` -> `self_attn.in_projs.0.weight`)."""
    mimi = loaders.get_mimi(None, mimi_config, device="cpu", num_codebooks=architectures.NUM_AUDIO_CODEBOOKS)
    header = read_safetensors_header(path)
    released, current = layout.expected_release_shapes(mimi), layout.expected_shapes(mimi)
    in_release_layout = any(name in released and name not in current for name in header)
    check_state(path, header, released if in_release_layout else current, "Mimi")
    mimi.load_state_dict(dict(stream_safetensors(path, header)), strict=True)
    return mimi.to(device).eval()


def load_tokenizer(path: Path, text_card: int) -> sentencepiece.SentencePieceProcessor:
    try:
        tokenizer = sentencepiece.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a sentencepiece model ({exc})") from None
    if tokenizer.vocab_size() != text_card:
        raise CheckpointError(f"{path}: vocabulary of {tokenizer.vocab_size()} pieces, the LM expects {text_card}")
    return tokenizer


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
    mimi = use_ring(load_mimi(files.mimi, config.mimi_config, device),
                    architectures.family_spec(config.family).mimi_ring)
    tokenizer = load_tokenizer(files.tokenizer, config.lm_kwargs["text_card"])
    prompt_codes = config.prompt_codes or derive_prompt_codes(mimi)
    return ModelBundle(
        family=config.family, lm=lm, mimi=mimi, tokenizer=tokenizer, voices=discover_voices(files.voices),
        prompt_codes=prompt_codes, lm_kwargs=config.lm_kwargs, mimi_config=config.mimi_config, files=files,
    )
