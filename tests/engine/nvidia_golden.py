"""NVIDIA's reference run (tests/golden/personaplex-toy, made by scripts/nvidia_parity/run_nvidia.py)
and the comparisons that hold on any CPU.

A float32 kernel on another instruction set (or split over another number of threads) rounds
differently in the last bits. The toy models have near-tied logits and near-tied Mimi codewords,
so a greedy token can flip on one machine and not on another, and everything after it differs.
What is compared, therefore:

- the LM along NVIDIA's own token path (teacher forcing: our engine is made to take NVIDIA's
  greedy tokens), logits within LOGIT_ATOL of NVIDIA's at NVIDIA's top-k entries, and our argmax
  equal to NVIDIA's wherever NVIDIA's best logit leads the second by more than DECISIVE_LOGIT_MARGIN;
- Mimi's latents before quantisation within LATENT_ATOL, and its codes wherever NVIDIA's nearest
  codeword leads the next by more than DECISIVE_CODE_MARGIN (along the same residual path: a
  codebook is compared only if the codebooks before it in that frame agree).

The tolerances are measured (scripts/nvidia_parity/README.md): on the CPU kernels of three instruction sets
(ATEN_CPU_CAPABILITY=default, avx2 and the machine's AVX-512) with 1 and 2 threads, the largest
deviation seen was 1.9e-6 for logits and 7e-8 for latents, and no decisive token differed; a
prompt one frame late, a delay changed or voice embeddings one step off move logits by 0.24 to 4.5.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from engine_helpers import GENERATED_FRAMES, GREEDY, SessionTrace, run_session
from plexray.serve.engine import Engine, SessionSettings
from replica import GOLDEN_DIR
LOGIT_ATOL = 2e-5  # logits of magnitude ~4; 10x the largest deviation measured
DECISIVE_LOGIT_MARGIN = 2 * LOGIT_ATOL  # two rounding errors cannot swap logits further apart than this
LATENT_ATOL = 1e-6  # latents of magnitude ~0.1; 14x the largest deviation measured
DECISIVE_CODE_MARGIN = 1e-5  # lead of the nearest codeword's distance over the next (measured: none under it flipped)
MIN_DECISIVE_LOGITS = 0.9  # the checks must compare most of what there is, or they prove nothing
MIN_DECISIVE_CODES = 0.3  # the toy Mimi's deep codebooks work on residuals of ~1e-8: their codes are ties


@dataclasses.dataclass(frozen=True)
class Golden:
    tokens: dict  # golden.json
    arrays: dict[str, np.ndarray]  # golden.npz

    def top(self, source: str, part: str) -> tuple[np.ndarray, np.ndarray]:
        """NVIDIA's top-k (indices, values) of session `source` ('wav' | 'pt'), `part` in
        'prompt_text' [P, K], 'generated_text' [S, K], 'generated_audio' [S, 8, K]."""
        return self.arrays[f"{source}_{part}_top_indices"], self.arrays[f"{source}_{part}_top_values"]

    def path(self, source: str) -> list[list[int]]:
        """NVIDIA's greedy tokens [text, agent codebooks 0-7] of every step after the prompt."""
        return self.tokens["sessions"][source]["generated_path"]


def load_golden(directory: Path = GOLDEN_DIR) -> Golden:
    with np.load(directory / "golden.npz") as arrays:
        return Golden(json.loads((directory / "golden.json").read_text()), dict(arrays))


@dataclasses.dataclass(frozen=True)
class Agreement:
    """How one of our tensors compares with NVIDIA's along NVIDIA's path."""

    what: str
    max_deviation: float  # largest |ours - NVIDIA's| over the compared values
    tolerance: float
    compared: int  # tokens compared (decisive ones)
    total: int  # tokens there are
    mismatched: list[tuple[int, ...]]  # where a decisive token differs

    @property
    def holds(self) -> bool:
        return self.max_deviation <= self.tolerance and not self.mismatched

    def check(self, min_compared: float) -> None:
        assert self.holds, (f"{self.what}: max deviation {self.max_deviation:.3g} (tolerance {self.tolerance:g}), "
                            f"decisive tokens that differ at {self.mismatched[:10]}")
        assert self.compared >= min_compared * self.total, (
            f"{self.what}: only {self.compared} of {self.total} tokens are decisive: the check proves too little")


def logits_agreement(what: str, ours: torch.Tensor, indices: np.ndarray, values: np.ndarray) -> Agreement:
    """`ours` [..., V] against NVIDIA's top-k `indices`/`values` [..., K] of the same steps."""
    assert ours.shape[:-1] == indices.shape[:-1], (what, tuple(ours.shape), indices.shape)
    ours_at = ours.float().gather(-1, torch.from_numpy(indices).long()).numpy()  # [..., K]
    decisive = (values[..., 0] - values[..., 1]) > DECISIVE_LOGIT_MARGIN
    differs = decisive & (ours.argmax(-1).numpy() != indices[..., 0])
    return Agreement(what, float(np.abs(ours_at - values).max()), LOGIT_ATOL, int(decisive.sum()),
                     int(decisive.size), [tuple(int(i) for i in where) for where in np.argwhere(differs)])


def codes_agreement(what: str, latents: np.ndarray, codes: np.ndarray, golden_latents: np.ndarray,
                    golden_codes: np.ndarray, margins: np.ndarray) -> Agreement:
    """Our Mimi `latents` [F, D] and `codes` [F, 8] against NVIDIA's, with its per-code `margins` [F, 8]."""
    assert latents.shape == golden_latents.shape and codes.shape == golden_codes.shape == margins.shape
    compared, mismatched = 0, []
    for frame in range(codes.shape[0]):
        for codebook in range(codes.shape[1]):
            if codebook and codes[frame, codebook - 1] != golden_codes[frame, codebook - 1]:
                break  # another residual from here on: nothing after it is comparable
            if margins[frame, codebook] <= DECISIVE_CODE_MARGIN:
                continue
            compared += 1
            if codes[frame, codebook] != golden_codes[frame, codebook]:
                mismatched.append((frame, codebook))
    return Agreement(what, float(np.abs(latents - golden_latents).max()), LATENT_ATOL, compared, codes.size,
                     mismatched)


def nvidia_path_session(engine: Engine, golden: Golden, source: str, user_pcm: np.ndarray,
                        neighbours: list[SessionSettings] = ()) -> SessionTrace:
    """A greedy session with NVIDIA's prompt, voice, user codes and tokens (teacher forcing).

    A `.wav` voice takes NVIDIA's Mimi codes of the voice (compared on their own by the Mimi test).
    """
    if source == "wav":
        engine._planner._voice_codes["NATF0"] = torch.tensor(golden.tokens["voice_codes"])
    settings = SessionSettings(text_prompt=golden.tokens["text_prompt"], voice="NATF0", **GREEDY)
    return run_session(engine, settings, user_pcm, list(neighbours), golden.tokens["user_codes"],
                       forced_path=golden.path(source))


def agreements(trace: SessionTrace, golden: Golden, source: str) -> list:
    steps = 1 + GENERATED_FRAMES
    return [logits_agreement(f"{source}: prompt text logits", trace.prompt_text_logits,
                             *golden.top(source, "prompt_text")),
            logits_agreement(f"{source}: text logits", trace.text_logits, *(
                part[:steps] for part in golden.top(source, "generated_text"))),
            logits_agreement(f"{source}: agent audio logits", trace.audio_logits, *(
                part[:steps] for part in golden.top(source, "generated_audio")))]


def encode_with_latents(mimi, frames_pcm: np.ndarray, encode) -> tuple[np.ndarray, np.ndarray]:
    """Run `encode(mimi, frames_pcm)` (plexray's encoder) and catch the latent Mimi quantised for each frame.

    Returns (latents [F, D], codes [F, 8]).
    """
    latents: list[torch.Tensor] = []
    quantizer_encode = mimi.quantizer.encode

    def recording(x):  # [B, D, T]
        latents.extend(x.permute(0, 2, 1).reshape(-1, x.shape[1]).float().clone())
        return quantizer_encode(x)

    mimi.quantizer.encode = recording  # an instance attribute over the class's method, removed below
    try:
        codes = encode(mimi, frames_pcm)  # [8, F]
    finally:
        del mimi.quantizer.encode
    return torch.stack(latents).numpy(), codes.T.numpy()
