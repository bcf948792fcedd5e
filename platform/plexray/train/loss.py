"""The training loss: weighted cross-entropy over the text stream and the audio codebooks.

Two parts, each a weighted mean normalised by its own weight sum, added (as moshi-finetune does):
    text  = sum(w_text * CE_text) / sum(w_text)      w: non-padding vs padding (ids 3 and 0) tokens
    audio = sum(w_cb * CE_cb) / sum(w_cb)            w: semantic codebook 0 vs acoustic 1-7, per speaker
Prompt-phase frames and padding (-1) get weight 0. The named presets are weight sets of this one
loss. Components logged beside the total are plain means over the agent's tokens (text = the
weighted text part; semantic = CE of agent codebook 0; acoustic = CE of agent codebooks 1-7),
with token accuracies.

Normalisation can use weight sums from outside the micro-batch (all micro-batches of a step, all
workers), so that N workers and gradient accumulation compute exactly the loss of one big batch.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from moshi.models.lm import LMOutput

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS, TEXT_END_OF_PADDING_ID, TEXT_PADDING_ID


@dataclasses.dataclass(frozen=True)
class LossWeights:
    text: float  # a non-padding text token
    text_padding: float  # a text padding token (ids 3 and 0)
    semantic: float  # the agent's audio codebook 0
    acoustic: float  # audio codebooks 1-7 (the agent's, and the user's)
    user_semantic: float  # the user's audio codebook 0 (PersonaPlex depformer step 8)
    user_audio: float  # multiplier for the user stream's codebooks (PersonaPlex depformer steps 8-15)


PRESETS: dict[str, LossWeights] = {
    # PersonaPlex paper: acoustic tokens 0.02 relative to semantic, padded text tokens 0.3.
    "personaplex": LossWeights(text=1.0, text_padding=0.3, semantic=1.0, acoustic=0.02, user_semantic=1.0,
                               user_audio=1.0),
    # Kyutai's moshi-finetune: the first predicted codebook x100 (its example config), text padding
    # 0.5, every other codebook 1. It multiplies codebook 0 only, so on PersonaPlex's 16 codebooks
    # the user's semantic codebook (step 8) keeps weight 1.
    "moshi-finetune": LossWeights(text=1.0, text_padding=0.5, semantic=100.0, acoustic=1.0, user_semantic=1.0,
                                  user_audio=1.0),
    # Seed document fixes-summary.md: semantic 100 (both speakers'), acoustic 1, text unweighted.
    "semantic-x100": LossWeights(text=1.0, text_padding=1.0, semantic=100.0, acoustic=1.0, user_semantic=100.0,
                                 user_audio=1.0),
}


def weights_from_config(config) -> LossWeights:
    """A preset with the single weights the `train.loss` config section overrides."""
    overrides = {field: getattr(config, f"{field}_weight") for field in
                 ("text", "text_padding", "semantic", "acoustic", "user_audio")}
    return dataclasses.replace(PRESETS[config.preset], **{k: v for k, v in overrides.items() if v is not None})


def token_weights(codes: torch.Tensor, loss_frames: torch.Tensor, weights: LossWeights,
                  delays: list[int], dep_q: int) -> tuple[torch.Tensor, torch.Tensor]:
    """THE weighting rule. codes [B, 17, T] (-1 = none), loss_frames [B, T] bool (False: prompt phase or
    padding) -> (text weights [B, T], audio weights [B, dep_q, T]).

    A frame t of stream k has no prediction when t >= T - delay_k (its logits fall past the input),
    so it gets weight 0 as LMModel.forward's mask says; computing that here lets the weight sums be
    known before the forward pass.
    """
    frames = codes.shape[-1]
    frame_index = torch.arange(frames, device=codes.device)

    text = codes[:, 0]  # [B, T]
    is_padding = (text == TEXT_PADDING_ID) | (text == TEXT_END_OF_PADDING_ID)
    text_weights = torch.where(is_padding, weights.text_padding, weights.text)
    text_valid = loss_frames & (text >= 0) & (frame_index < frames - delays[0])
    text_weights = text_weights * text_valid

    acoustic = [weights.acoustic] * (NUM_AUDIO_CODEBOOKS - 1)
    agent = [weights.semantic] + acoustic
    user = [w * weights.user_audio for w in [weights.user_semantic] + acoustic]
    per_codebook = agent + user
    codebook_weights = torch.tensor(per_codebook[:dep_q], device=codes.device)  # [dep_q]
    audio = codes[:, 1:1 + dep_q]  # [B, dep_q, T]
    audio_delays = torch.tensor(delays[1:1 + dep_q], device=codes.device)  # [dep_q]
    audio_valid = (loss_frames[:, None] & (audio >= 0)
                   & (frame_index[None] < frames - audio_delays[:, None])[None])
    audio_weights = codebook_weights[None, :, None] * audio_valid
    return text_weights, audio_weights


# Order of the sums in LossStats.values (a plain vector, so workers all-reduce it in one call).
STAT_NAMES = ("text_nll", "text_weight", "audio_nll", "audio_weight",
              "semantic_nll", "semantic_tokens", "semantic_correct",
              "acoustic_nll", "acoustic_tokens", "acoustic_correct",
              "text_correct", "text_tokens")


@dataclasses.dataclass
class LossStats:
    """Sums over tokens (detached), to aggregate across micro-batches, workers and evaluation batches."""

    values: torch.Tensor  # [len(STAT_NAMES)] float64

    @classmethod
    def zeros(cls) -> "LossStats":
        return cls(torch.zeros(len(STAT_NAMES), dtype=torch.float64))

    def __add__(self, other: "LossStats") -> "LossStats":
        return LossStats(self.values + other.values.to(self.values.device))

    def metrics(self) -> dict[str, float]:
        """Total loss, components and accuracies (text accuracy over non-padding tokens only)."""
        s = dict(zip(STAT_NAMES, self.values.tolist()))

        def ratio(a: str, b: str) -> float:
            return s[a] / s[b] if s[b] > 0 else float("nan")

        text, audio = ratio("text_nll", "text_weight"), ratio("audio_nll", "audio_weight")
        return {
            "loss": (0.0 if s["text_weight"] == 0 else text) + (0.0 if s["audio_weight"] == 0 else audio),
            "text_loss": text, "audio_loss": audio,
            "semantic_loss": ratio("semantic_nll", "semantic_tokens"),
            "acoustic_loss": ratio("acoustic_nll", "acoustic_tokens"),
            "text_accuracy": ratio("text_correct", "text_tokens"),
            "semantic_accuracy": ratio("semantic_correct", "semantic_tokens"),
            "acoustic_accuracy": ratio("acoustic_correct", "acoustic_tokens"),
        }


@dataclasses.dataclass
class LossResult:
    total: torch.Tensor  # scalar, differentiable
    stats: LossStats


def weight_sums(text_weights: torch.Tensor, audio_weights: torch.Tensor) -> torch.Tensor:
    """[2] float64: the normalisers of the text and audio parts."""
    return torch.stack([text_weights.sum(), audio_weights.sum()]).double()


def compute_loss(output: LMOutput, codes: torch.Tensor, text_weights: torch.Tensor,
                 audio_weights: torch.Tensor, normalizer: torch.Tensor | None = None) -> LossResult:
    """The loss of one batch. `normalizer` [2] (text, audio weight sums) defaults to this batch's own."""
    dep_q = audio_weights.shape[1]
    if normalizer is None:
        normalizer = weight_sums(text_weights, audio_weights)
    text_weights = text_weights * output.text_mask[:, 0]
    audio_weights = audio_weights * output.mask

    text_targets = codes[:, 0]  # [B, T]
    text_nll, text_hit = _token_nll(output.text_logits[:, 0], text_targets, output.text_mask[:, 0])
    audio_targets = codes[:, 1:1 + dep_q]  # [B, dep_q, T]
    audio_nll, audio_hit = _token_nll(output.logits, audio_targets, output.mask)

    text_sum = (text_weights * text_nll).sum()
    audio_sum = (audio_weights * audio_nll).sum()
    total = (text_sum / normalizer[0].clamp(min=1e-12).to(text_sum.dtype)
             + audio_sum / normalizer[1].clamp(min=1e-12).to(audio_sum.dtype))

    with torch.no_grad():
        is_padding = (text_targets == TEXT_PADDING_ID) | (text_targets == TEXT_END_OF_PADDING_ID)
        text_tokens = (text_weights > 0) & ~is_padding
        semantic = audio_weights[:, 0] > 0
        acoustic = audio_weights[:, 1:NUM_AUDIO_CODEBOOKS] > 0
        agent_nll, agent_hit = audio_nll[:, :NUM_AUDIO_CODEBOOKS], audio_hit[:, :NUM_AUDIO_CODEBOOKS]
        values = torch.stack([
            text_sum.detach(), text_weights.sum(), audio_sum.detach(), audio_weights.sum(),
            agent_nll[:, 0][semantic].sum(), semantic.sum(), agent_hit[:, 0][semantic].sum(),
            agent_nll[:, 1:][acoustic].sum(), acoustic.sum(), agent_hit[:, 1:][acoustic].sum(),
            text_hit[text_tokens].sum(), text_tokens.sum(),
        ]).double().cpu()
    return LossResult(total=total, stats=LossStats(values))


def _token_nll(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token CE and argmax hits. logits [..., V] (NaN where mask is False), targets [...] (-1 allowed)."""
    safe_logits = torch.where(mask[..., None], logits, 0.0).float()  # NaN would poison even zero weights
    safe_targets = targets.clamp(min=0)
    nll = F.cross_entropy(safe_logits.flatten(0, -2), safe_targets.flatten(), reduction="none")
    hit = safe_logits.argmax(-1) == safe_targets
    return nll.view(targets.shape), hit & mask
