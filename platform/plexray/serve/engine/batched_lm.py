"""The platform's generation step: moshi's LMModel pieces, batched over B session slots.

moshi's LMGen cannot run PersonaPlex (it derives 0 user codebooks from dep_q=16 and cannot force
text), and with its default settings one slot's reset stalls the whole batch. Here every slot
has its own position: the temporal transformer runs one step for all slots with an exec mask
(slots that are free or prefilling keep their state untouched), and a joining slot prefills its
prompt in chunks through a batch-1 *view* of its own slice of the KV caches, so the slots that
are talking never wait.

Token bookkeeping per slot (columns = 80 ms frames, positions = transformer steps):
    the step at position s reads stream k at column s - 1 - delay_k (initial token if < 0:
    `plexray.model.inputs`, the rule LMModel.forward applies in training), and produces text and agent codebook 0 of column s and
    agent codebooks 1-7 of column s - 1. Only the agent's 8 depformer steps are sampled (the
    depformer is causal: PersonaPlex's steps 8-15, the user's codebooks, are never needed).
A ring of 3 columns per slot holds all the tokens a step reads and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from moshi.models.lm import LMModel
from moshi.modules.transformer import RingKVCache
from moshi.utils.compile import CUDAGraphed

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.inputs import source_frames
from plexray.serve.engine.batched_lora import SlotRows
from plexray.serve.engine.long_context import pin_prompts
from plexray.serve.engine.sampling import SamplingParams, apply_text_biases, sample

HISTORY_COLUMNS = 3
AGENT = slice(1, 1 + NUM_AUDIO_CODEBOOKS)  # agent codebooks in the 17 streams
USER = slice(1 + NUM_AUDIO_CODEBOOKS, 1 + 2 * NUM_AUDIO_CODEBOOKS)


@dataclasses.dataclass
class TextBiases:
    """Per-slot text-logit adjustments (see sampling.apply_text_biases)."""

    recent_tokens: torch.Tensor  # [B, C] long, -1 = empty
    penalty: torch.Tensor  # [B] float
    pad_log_mult: torch.Tensor  # [B] float


@dataclasses.dataclass
class Forced:
    """Tokens to impose instead of sampling (prompt columns, teacher forcing)."""

    text: torch.Tensor  # [B] long
    text_mask: torch.Tensor  # [B] bool
    audio: torch.Tensor  # [B, 8] long
    audio_mask: torch.Tensor  # [B, 8] bool


@dataclasses.dataclass
class StepOutput:
    text: torch.Tensor  # [B] text token of column s
    audio: torch.Tensor  # [B, 8] agent tokens: codebook 0 of column s, 1-7 of column s - 1
    text_logits: torch.Tensor  # [B, text_card] float32, before biases
    audio_logits: torch.Tensor  # [B, 8, card] float32


class BatchedLM:
    """The LM in streaming mode with `batch_size` slots. Not thread-safe: one engine thread drives it."""

    def __init__(self, lm: LMModel, batch_size: int, cuda_graphs: bool = False, prompt_capacity: int = 1000,
                 slot_rows: SlotRows | None = None):
        """`slot_rows`: each slot's adapter row, where the LM's linears were wrapped for adapters (batched_lora.py)."""
        self.lm = lm
        self._slot_rows = slot_rows
        self.batch_size = batch_size
        self.device = lm.device
        self._streaming = lm.streaming(batch_size)
        # Past the context the prompt stays and the conversation slides (long_context.py).
        context = lm.transformer.layers[0].self_attn.context
        self._pinned_caches = pin_prompts(lm, batch_size, min(prompt_capacity, context - 1))
        self._main_state = lm.get_streaming_state()
        self._slot_states: dict[int, dict] = {}
        self.history = torch.zeros(batch_size, lm.num_codebooks, HISTORY_COLUMNS, dtype=torch.long,
                                   device=self.device)
        self.positions = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # next position per slot
        self.initial = lm._get_initial_token()[0, :, 0].to(self.device)  # [17]
        self.delays = torch.tensor(lm.delays, device=self.device)
        graphs_off = not (cuda_graphs and self.device.type == "cuda")
        self._graphed = not graphs_off
        self._temporal = CUDAGraphed(lm.forward_text, disable=graphs_off)
        self._depth = CUDAGraphed(self._depformer, disable=graphs_off)

    def close(self) -> None:
        """Leave streaming mode (the LM can be used elsewhere again)."""
        self._streaming.close()

    @property
    def context(self) -> int:
        return self.lm.transformer.layers[0].self_attn.context

    def pin_prompt(self, slot: int, prompt_frames: int) -> None:
        """Keep the slot's first `prompt_frames` positions (its prefilled prompt) in the KV caches for good."""
        for cache in self._pinned_caches:
            cache.pin(slot, prompt_frames)

    def reset_slot(self, slot: int) -> None:
        mask = torch.zeros(self.batch_size, dtype=torch.bool, device=self.device)
        mask[slot] = True
        self.lm.reset_streaming(mask)
        self.positions[slot] = 0
        self.history[slot] = 0

    # ----- prefill -----------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, slot: int, embeddings: torch.Tensor) -> None:
        """Run the temporal transformer over `embeddings` [T, dim] (positions p..p+T-1) for one slot.

        Only that slot's slice of the KV caches moves; the other slots' state is untouched. The
        outputs are not needed: every prompt token is forced.
        """
        self.lm.set_streaming_state(self._slot_view(slot))
        only_slot = self._slot_rows.only(slot) if self._slot_rows is not None else contextlib.nullcontext()
        try:
            with only_slot:  # the slot's own adapter on its batch of one
                self.lm.transformer(embeddings[None].to(self.lm.dtype))
        finally:
            self.lm.set_streaming_state(self._main_state)
        self.positions[slot] += embeddings.shape[0]

    def write_columns(self, slot: int, codes: torch.Tensor, first_column: int) -> None:
        """Store prompt columns `codes` [17, n] (columns first_column...) in the slot's ring."""
        for i in range(codes.shape[1]):
            self.history[slot, :, (first_column + i) % HISTORY_COLUMNS] = codes[:, i].to(self.device)

    def _slot_view(self, slot: int) -> dict:
        """The streaming state of one slot as a batch of 1 whose tensors are views into the batched state."""
        if slot not in self._slot_states:
            self._slot_states[slot] = {name: _slice_state(state, slot) for name, state in self._main_state.items()}
        return self._slot_states[slot]

    # ----- one step for every slot ---------------------------------------------------------------
    def set_user_codes(self, codes: torch.Tensor, slots: torch.Tensor) -> None:
        """User codes [B, 8] of column (position - 1) for the slots where `slots` [B] is True."""
        column = (self.positions - 1) % HISTORY_COLUMNS
        current = self.history[torch.arange(self.batch_size, device=self.device), USER, column]
        # advanced indexing puts the [B] dim first and the 8 codebooks second: current is [B, 8]
        self.history[torch.arange(self.batch_size, device=self.device), USER, column] = torch.where(
            slots[:, None], codes.to(self.device), current)

    def inputs(self) -> torch.Tensor:
        """Transformer input tokens [B, 17] at each slot's current position."""
        column = source_frames(self.positions, self.delays)  # [B, 17]
        tokens = self.history.gather(2, (column % HISTORY_COLUMNS)[..., None])[..., 0]
        return torch.where(column < 0, self.initial[None], tokens)

    @torch.no_grad()
    def step(self, active: torch.Tensor, text_params: SamplingParams, audio_params: SamplingParams,
             biases: TextBiases, forced: Forced, k_max: tuple[int, int],
             sliding_prompt_frames: int | None = None) -> StepOutput:
        """Advance the `active` [B] slots by one position; the others' state does not change.

        `sliding_prompt_frames`: the longest prompt among the active slots at or past the context (0 if
        none), whose pinned prompts are re-rotated at this step (long_context.py); None: the whole pinned
        capacity, as always under CUDA graphs (a captured step cannot vary).
        """
        for cache in self._pinned_caches:
            whole = cache.prompt_keys.shape[2]
            cache.rerotate_frames = whole if sliding_prompt_frames is None or self._graphed else sliding_prompt_frames
        inputs = self.inputs()
        self.lm.set_exec_mask(active)
        transformer_out, text_logits = self._temporal(inputs[:, :, None])  # [B, 1, dim], [B, 1, 1, V]
        text_logits = text_logits[:, 0, 0].float()
        biased = apply_text_biases(text_logits, biases.recent_tokens, biases.penalty, biases.pad_log_mult,
                                   text_params.temperature, self.lm.text_padding_token_id)
        text = sample(biased, text_params, self.positions, stream=0, k_max=k_max[0])
        text = torch.where(forced.text_mask, forced.text, text)
        audio, audio_logits = self._depth(
            text, transformer_out, audio_params.temperature, audio_params.top_k, audio_params.seed,
            self.positions, forced.audio, forced.audio_mask, k_max[1])
        self._remember(active, text, audio)
        return StepOutput(text=text, audio=audio, text_logits=text_logits, audio_logits=audio_logits)

    def _depformer(self, text, transformer_out, temperature, top_k, seed, positions, forced_audio,
                   forced_mask, k_max) -> tuple[torch.Tensor, torch.Tensor]:
        params = SamplingParams(temperature, top_k, seed)
        previous = text
        tokens, all_logits = [], []
        with self.lm.depformer.streaming(self.batch_size):
            for codebook in range(NUM_AUDIO_CODEBOOKS):
                logits = self.lm.forward_depformer(codebook, previous[:, None, None], transformer_out)[:, 0, 0]
                logits = logits.float()
                token = sample(logits, params, positions, stream=1 + codebook, k_max=k_max)
                token = torch.where(forced_mask[:, codebook], forced_audio[:, codebook], token)
                tokens.append(token)
                all_logits.append(logits)
                previous = token
        return torch.stack(tokens, 1), torch.stack(all_logits, 1)

    def _remember(self, active: torch.Tensor, text: torch.Tensor, audio: torch.Tensor) -> None:
        rows = torch.arange(self.batch_size, device=self.device)
        now = self.positions % HISTORY_COLUMNS
        before = (self.positions - 1) % HISTORY_COLUMNS
        self.history[rows, 0, now] = torch.where(active, text, self.history[rows, 0, now])
        self.history[rows, 1, now] = torch.where(active, audio[:, 0], self.history[rows, 1, now])
        acoustic = self.history[rows, 2:1 + NUM_AUDIO_CODEBOOKS, before]  # [B, 7]
        self.history[rows, 2:1 + NUM_AUDIO_CODEBOOKS, before] = torch.where(active[:, None], audio[:, 1:], acoustic)
        self.positions += active.long()

    def column(self, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Agent codes [B, 8] and text tokens [B] of column (position + offset) for every slot.

        After a step that started at position s (positions are now s + 1), offset -2 is column
        s - 1: the newest column whose 8 agent codebooks are all known.
        """
        column = (self.positions + offset) % HISTORY_COLUMNS
        rows = torch.arange(self.batch_size, device=self.device)
        return self.history[rows, AGENT, column], self.history[rows, 0, column]


def _slice_state(state, slot: int):
    """A batch-1 copy of a moshi streaming State whose per-slot tensors are views of `state`'s."""
    changes = {"batch_size": 1}
    for field in dataclasses.fields(state):
        value = getattr(state, field.name)
        if isinstance(value, RingKVCache):
            view = RingKVCache.__new__(RingKVCache)
            view.capacity, view.respect_exec_mask = value.capacity, value.respect_exec_mask
            view.cache = value.cache[:, slot:slot + 1]  # [2, 1, H, capacity, D] view
            view.end_offset = value.end_offset[slot:slot + 1]
            changes[field.name] = view
        elif isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == state.batch_size:
            changes[field.name] = value[slot:slot + 1]
    return dataclasses.replace(state, **changes)  # __post_init__ gives the view its own exec mask (all True)
