"""The engine: one model, B session slots, one 80 ms frame for every live session per tick.

A tick, in order:
  1. retire sessions that closed, ran past max_session_s or went idle;
  2. admit waiting sessions into free slots (per-slot reset of LM and Mimi state only);
  3. prefill joining sessions' prompts, at most `prefill_frames_per_tick` frames per tick in all,
     each through its own slice of the KV caches (the talking sessions are not in that batch);
  4. one batched Mimi encode of every live session's next user frame (silence when the client
     sent none: the user stream never stops), one batched LM step for the live sessions and for
     those whose prefill just finished, one batched Mimi decode; each live session gets one
     SessionOutput (agent audio of one column and the text token of the same column).

Context: the LM attends to 3000 frames (240 s) and PersonaPlex's role lives in the prompt at the
start of that window. Past the window the prompt stays pinned in the KV caches and the
conversation slides behind it (long_context.py), so a call of any length stays in character with
constant memory; `max_session_s` is a policy, not a limit of the model.

Failure: a tick that raises (CUDA out of memory, a bug) fails the engine for good: every session
ends with reason 'engine_failed', open_session refuses, `failure` names the error and run() raises.
The engine cannot tell what state the failed tick left the model in, so it does not try to go on:
whoever runs it replaces it (the Serve replica reports unhealthy).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import itertools
import math
import threading
import time

import numpy as np
import torch

from plexray.errors import PlexrayError
from plexray.model.architectures import NUM_AUDIO_CODEBOOKS, TEXT_END_OF_PADDING_ID, TEXT_PADDING_ID
from plexray.model.loader import ModelBundle
from plexray.model.prompt import FRAME_RATE, FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.engine.adapters import AdapterKey, AdapterPool
from plexray.serve.engine.batched_lm import BatchedLM, Forced, TextBiases
from plexray.serve.engine.batched_lora import AdapterTables
from plexray.serve.engine.codec import BatchedMimi
from plexray.serve.engine.config import EngineConfig, SessionSettings
from plexray.serve.engine.errors import EngineFullError, EngineUnavailableError, SessionSettingsError
from plexray.serve.engine.metrics import EngineMetrics
from plexray.serve.engine.prompt_plan import PromptLayout, PromptPlan, PromptPlanner
from plexray.serve.engine.sampling import SamplingParams
from plexray.serve.engine.session import Session, SessionOutput

FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE


@dataclasses.dataclass
class Slot:
    """A session in a slot. phase: 'prefill' (prompt in progress), 'first' (prompt done, first step due), 'live'."""

    session: Session
    plan: PromptPlan
    phase: str
    admitted: int  # admission order: prefill is first come, first served
    adapter: AdapterKey | None = None  # the LoRA adapter it runs on (its device row is in AdapterTables.slot_rows)
    position: int = 0  # transformer positions done (mirror of BatchedLM.positions, no device sync)
    prefilled: int = 0
    live_frames: int = 0
    idle_frames: int = 0  # ticks since the client last pushed audio
    last_pushes: int = 0


class Engine:
    def __init__(self, bundle: ModelBundle, config: EngineConfig | None = None):
        if bundle.lm.is_streaming or bundle.mimi.is_streaming:
            raise PlexrayError("this model is already driven by another Engine: close that engine first, "
                               "or load a second copy of the model")
        self.bundle = bundle
        self.config = config = config or EngineConfig()
        # torch.compile is not the engine's to choose: loading the model applied model.compile.
        self._cuda_graphs = config.cuda_graphs and bundle.lm.device.type == "cuda"
        self._planner = PromptPlanner(bundle, config.max_prompt_frames)  # before Mimi starts streaming
        batch = config.max_sessions
        # Adapters per session: the LM's targeted linears are wrapped before streaming starts (batched_lora.py).
        self._tables = self._adapters = None
        if config.adapters is not None:
            self._tables = AdapterTables(bundle.lm, config.adapters.targets, config.adapters.max_on_device,
                                         config.adapters.max_rank, batch)
            self._adapters = AdapterPool(config.adapters, self._tables, bundle.lm.dtype)
        self._lm = BatchedLM(bundle.lm, batch, cuda_graphs=self._cuda_graphs,
                             prompt_capacity=config.max_prompt_frames,
                             slot_rows=self._tables.slot_rows if self._tables is not None else None)
        self._mimi = BatchedMimi(bundle.mimi, batch)
        self._device = bundle.lm.device
        self._slots: list[Slot | None] = [None] * batch
        # Sessions waiting for a slot (with the adapter version each one needs), oldest first; only the
        # tick thread takes from it while run() goes.
        self._pending: collections.deque[tuple[Session, PromptLayout, AdapterKey | None]] = collections.deque()
        self._lock = threading.Lock()  # guards _pending, _slots membership, _failure and the counters below
        self._ids = itertools.count(1)
        self._admissions = itertools.count()
        self._metrics = EngineMetrics(config.tick_history)
        self._ended_totals = collections.Counter()  # per-session stats of sessions that ended
        self._stop = threading.Event()
        self._closed = False
        self._failure: str | None = None  # the error of the tick that failed the engine
        self._injected_fault: str | None = None  # see inject_fault
        self._max_live_frames = math.ceil(config.max_session_s * FRAME_RATE)
        self._idle_frames = math.ceil(config.idle_timeout_s * FRAME_RATE)
        self._params = _SlotParams(batch, config.repetition_context_max, self._device)

    # ----- public surface ------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self.config.max_sessions

    @property
    def active_sessions(self) -> int:
        """Sessions holding or waiting for a slot (one that asked to close holds none)."""
        with self._lock:
            return self._held_slots()

    @property
    def failure(self) -> str | None:
        """None while the engine works; once a tick has raised, that error ('RuntimeError: ...')."""
        with self._lock:
            return self._failure

    def open_session(self, settings: SessionSettings | None = None) -> Session:
        """Reserve a slot for a new conversation; it starts prefilling at the next tick.

        Cheap enough to call on an event loop: the prompt is only laid out here (tokenizer and a few
        small CPU tensors), which is where a bad voice or a prompt too long is refused. Its embeddings
        are made by the tick thread when the session takes its slot (`_admit`), because device work
        here (host-to-device copies, kernels queued behind the tick's) would stall the caller's event
        loop, which carries every other session's audio, and kernels launched from a second thread
        could break a CUDA-graph capture in progress in the tick thread.

        A session naming an adapter (`settings.adapter`) waits in the line until the adapter is read (on a
        loader thread) and has a device row, while sessions behind it are seated; an adapter that cannot be
        read ends it ('adapter_failed', `ended_detail` says why) before it is seated. To hear that error
        before opening, await `prepare_adapter(name)` first.

        Raises EngineFullError when every slot is taken, SessionSettingsError for bad settings (an unknown
        adapter included; all before anything is allocated), EngineUnavailableError once the engine is
        closed or has failed.
        """
        settings = settings or SessionSettings()
        if settings.repetition_penalty_context > self.config.repetition_context_max:
            raise SessionSettingsError(
                f"repetition_penalty_context {settings.repetition_penalty_context} exceeds this engine's "
                f"repetition_context_max {self.config.repetition_context_max}")
        with self._lock:
            self._check_room()
        layout = self._planner.layout(settings.text_prompt, settings.voice)
        if layout.num_frames + 1 >= self._lm.context:
            raise SessionSettingsError(f"prompt of {layout.num_frames} frames leaves no room in the LM context of "
                                       f"{self._lm.context} frames")
        adapter = None
        if settings.adapter is not None:
            self._serves_adapters(settings.adapter)
            adapter = self._adapters.want(settings.adapter)  # its current version, kept in host memory from now
        try:
            with self._lock:  # re-check: another caller may have taken the last slot, or the engine failed, meanwhile
                self._check_room()
                session = Session(next(self._ids), settings, self.config.output_buffer_frames,
                                  self.config.input_buffer_frames)
                self._pending.append((session, layout, adapter))
                self._metrics.sessions_opened += 1
        except Exception:
            if adapter is not None:
                self._adapters.unwant(adapter)
            raise
        return session

    def prepare_adapter(self, name: str) -> concurrent.futures.Future:
        """Start reading adapter `name` into host memory if it is not there (on the loader thread), so a
        caller hears of a bad adapter before opening a session (await it with asyncio.wrap_future).

        The future completes when it is ready, or raises AdapterFileError (corrupt, truncated, made for
        another base: the message says which). Raises SessionSettingsError at once for an unknown
        adapter, or an engine that serves none.
        """
        self._serves_adapters(name)
        return self._adapters.prepare(name)

    def _serves_adapters(self, name: str) -> None:
        if self._adapters is None:
            raise SessionSettingsError(f"adapter {name!r} asked for, but this engine serves no adapters "
                                       f"(engine.adapters is not configured)")

    def inject_fault(self, message: str) -> None:
        """Make the next tick raise RuntimeError(message), as a CUDA error or a bug would (tests, failure drills).

        No caller reaches it: a Serve replica exposes it only to Serve handles, and only when the
        config's `serve.fault_injection` is on (see deployments.PersonaPlexReplica.inject_engine_fault).
        """
        self._injected_fault = message

    def tick(self) -> None:
        """Advance every session by one 80 ms frame (synchronously, in the calling thread)."""
        fault, self._injected_fault = self._injected_fault, None
        if fault is not None:
            raise RuntimeError(f"injected fault: {fault}")
        started = time.perf_counter()
        with torch.no_grad():
            self._retire()
            self._admit()
            prefilled = self._prefill()
            self._step()
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._lock:  # metrics() reads these deques from the caller's thread
            self._metrics.ticks += 1
            self._metrics.tick_ms.append(elapsed_ms)
            if prefilled:
                self._metrics.prefill_tick_ms.append(elapsed_ms)

    async def run(self) -> None:
        """Tick every 80 ms until stop(), in a worker thread so the event loop stays responsive.

        A late tick is counted and the next one starts at once (catching up); more than 1 s behind,
        the schedule restarts from now. On return every session has ended ('engine_stopped').
        A tick that raises fails the engine (see the module docstring): every session ends
        ('engine_failed') and run() raises EngineUnavailableError from the tick's error.
        """
        with self._lock:
            self._check_open()
        self._stop.clear()
        loop = asyncio.get_running_loop()
        deadline = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="plexray-engine") as worker:
            try:
                while not self._stop.is_set():
                    deadline += FRAME_SECONDS
                    await loop.run_in_executor(worker, self.tick)
                    delay = deadline - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                        continue
                    self._metrics.late_ticks += 1
                    if -delay > 1.0:
                        self._metrics.resyncs += 1
                        deadline = time.monotonic()
            except Exception as error:
                self._fail(error)
                raise EngineUnavailableError(f"the engine failed: {self.failure}") from error
            finally:
                self._end_all("engine_stopped")

    def stop(self) -> None:
        """Ask run() to return after the current tick (safe from any thread)."""
        self._stop.set()

    def close(self) -> None:
        """End every session and release the model (leaves streaming mode, unwraps its linears). Not while
        run() is going."""
        if self._closed:
            return
        self._end_all("engine_stopped")
        with self._lock:
            self._closed = True
        self._lm.close()
        self._mimi.close()
        if self._tables is not None:
            self._adapters.close()
            self._tables.remove()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def metrics(self) -> dict:
        """Tick time p50/p99 (ms), late ticks, frames out/dropped, prefill cost, sessions, bad audio."""
        with self._lock:
            live = [slot.session for slot in self._slots if slot is not None]
            active = self._held_slots()
            totals = self._ended_totals.copy()
            snapshot = self._metrics.snapshot()
        for session in live:
            totals.update(_session_counters(session))
        snapshot.update(
            capacity=self.capacity, active_sessions=active,
            frames_out=totals["frames_out"], frames_dropped=totals["frames_dropped"],
            input_underruns=totals["input_underruns"], audio_refused=totals["audio_refused"],
            audio_repaired=totals["audio_repaired"], cuda_graphs=self._cuda_graphs,
        )
        if self._adapters is not None:
            snapshot["adapters"] = self._adapters.snapshot()
        return snapshot

    # ----- tick phases -----------------------------------------------------------------------------
    def _retire(self) -> None:
        for index, slot in enumerate(self._slots):
            if slot is None:
                continue
            reason = None
            if slot.session._wants_close:
                reason = "closed"
            elif slot.live_frames >= self._max_live_frames:
                reason = "max_duration"
            elif slot.phase == "live" and slot.idle_frames >= self._idle_frames:
                reason = "idle_timeout"
            if reason is not None:
                self._free(index, reason)

    def _free(self, index: int, reason: str) -> None:
        slot = self._slots[index]
        assert slot is not None
        with self._lock:
            self._slots[index] = None
            self._ended_totals.update(_session_counters(slot.session))
            self._metrics.sessions_ended[reason] += 1
        if slot.adapter is not None:
            self._adapters.release_row(slot.adapter)
            self._adapters.unwant(slot.adapter)
        # Ended only once its slot is free: the caller it wakes tells its client at once, and a client
        # that calls again at once must find the slot free.
        slot.session._end(reason)

    def _admit(self) -> None:
        """Seat waiting sessions in free slots, oldest first among those whose adapter is ready, embedding
        each one's prompt (see open_session) and copying its adapter into a device row if need be."""
        while True:
            with self._lock:
                index = next((i for i, slot in enumerate(self._slots) if slot is None), None)
                entry = self._next_to_seat() if index is not None else None
                if entry is None:
                    return
            # Outside the lock, so open_session never waits for device work; the session stays in
            # the line until it is seated, so the capacity check counts it all along.
            session, layout, adapter = entry
            plan = self._planner.embed(layout)
            row = self._adapters.acquire_row(adapter) if adapter is not None else 0
            assert row is not None, "_next_to_seat chose a session whose adapter can have no row"
            with self._lock:
                self._pending.remove(entry)
                self._slots[index] = Slot(session, plan, "prefill" if plan.num_frames else "first",
                                          admitted=next(self._admissions), adapter=adapter)
            self._lm.reset_slot(index)
            self._mimi.reset_slot(index)
            self._params.set(index, session.settings)
            if self._tables is not None:
                self._tables.slot_rows.rows[index] = row

    def _next_to_seat(self) -> tuple[Session, PromptLayout, AdapterKey | None] | None:
        """The oldest waiting session that can be seated now (the caller holds self._lock). Sessions that
        closed while waiting, or whose adapter could not be read, leave the line on the way."""
        for entry in list(self._pending):
            session, _, adapter = entry
            if session._wants_close:  # closed before it ever got a slot
                reason, detail = "closed", None
            elif adapter is not None and (detail := self._adapters.failure(adapter)) is not None:
                reason = "adapter_failed"
            elif adapter is None or self._adapters.can_seat(adapter):
                return entry
            else:
                continue  # its adapter is still being read, or every device row is in use: the others go first
            self._pending.remove(entry)
            if adapter is not None:
                self._adapters.unwant(adapter)
            session._end(reason, detail)
            self._metrics.sessions_ended[reason] += 1
        return None

    def _prefill(self) -> bool:
        budget = self.config.prefill_frames_per_tick
        joining = sorted(((slot.admitted, i) for i, slot in enumerate(self._slots)
                          if slot is not None and slot.phase == "prefill"))
        for _, index in joining:
            if budget <= 0:
                break
            slot = self._slots[index]
            count = min(budget, slot.plan.num_frames - slot.prefilled)
            started = time.perf_counter()
            self._lm.prefill(index, slot.plan.embeddings[slot.prefilled:slot.prefilled + count])
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            slot.session.stats.prefill_ms += (time.perf_counter() - started) * 1000
            slot.session.stats.prefill_frames += count
            self._metrics.prefill_frames += count
            slot.prefilled += count
            slot.position += count
            budget -= count
            if slot.prefilled == slot.plan.num_frames:
                self._lm.write_columns(index, slot.plan.last_columns, slot.plan.num_frames - 2)
                self._lm.pin_prompt(index, slot.plan.num_frames)
                slot.phase = "first"
                with self._lock:
                    self._metrics.session_prefill_ms.append(slot.session.stats.prefill_ms)
        return bool(joining)

    def _step(self) -> None:
        batch = self.capacity
        live = [i for i, slot in enumerate(self._slots) if slot is not None and slot.phase == "live"]
        first = [i for i, slot in enumerate(self._slots) if slot is not None and slot.phase == "first"]
        if not live and not first:
            return
        live_mask = _mask(batch, live, self._device)
        active_mask = _mask(batch, live + first, self._device)
        received_at: dict[int, float | None] = {}  # slot -> when its user frame became complete (None: silence)
        if live:
            pcm = np.zeros((batch, FRAME_SAMPLES), np.float32)  # silence for a stalled client
            for index in live:
                pcm[index], received_at[index] = self._next_user_frame(self._slots[index])
            self._lm.set_user_codes(self._mimi.encode(pcm, live_mask), live_mask)

        forced = self._forced_for(first)
        sliding_prompt_frames = max((self._slots[index].plan.num_frames for index in live + first
                                     if self._slots[index].position >= self._lm.context), default=0)
        out = self._lm.step(active_mask, self._params.text, self._params.audio, self._params.biases(),
                            forced, self._k_max(), sliding_prompt_frames)
        self._params.remember_text(out.text, active_mask)
        for index in live + first:
            self._slots[index].position += 1

        if live:
            agent_codes, text_tokens = self._lm.column(offset=-2)  # the column whose audio is now complete
            audio = self._mimi.decode(agent_codes, live_mask)
            tokens, codes = text_tokens.tolist(), agent_codes.tolist()
            for index in live:
                slot = self._slots[index]
                slot.session._publish(SessionOutput(audio[index].copy(), self._text_piece(tokens[index]),
                                                    tokens[index], tuple(codes[index]),
                                                    input_received_at=received_at[index],
                                                    produced_at=time.monotonic()))
                slot.live_frames += 1
        for index in first:
            self._slots[index].phase = "live"
            self._slots[index].session._mark_ready()

    def _next_user_frame(self, slot: Slot) -> tuple[np.ndarray, float | None]:
        """The session's next user frame (silence if none is buffered) and when it became complete."""
        frame, pushes, received_at = slot.session._take_input_frame()
        if pushes != slot.last_pushes:
            slot.last_pushes, slot.idle_frames = pushes, 0
        else:
            slot.idle_frames += 1
        return (np.zeros(FRAME_SAMPLES, np.float32), None) if frame is None else (frame, received_at)

    def _forced_for(self, first: list[int]) -> Forced:
        """The first step after a prompt re-imposes the prompt's last agent acoustic column (P-1)."""
        batch = self.capacity
        audio = torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.long)
        audio_mask = torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.bool)
        for index in first:
            plan = self._slots[index].plan
            if plan.num_frames:
                audio[index, 1:] = plan.last_columns[2:1 + NUM_AUDIO_CODEBOOKS, -1]
                audio_mask[index, 1:] = True
        device = self._device
        return Forced(text=torch.zeros(batch, dtype=torch.long, device=device),
                      text_mask=torch.zeros(batch, dtype=torch.bool, device=device),
                      audio=audio.to(device), audio_mask=audio_mask.to(device))

    def _k_max(self) -> tuple[int, int]:
        """Largest top-k over the slots (static vocabulary sizes under CUDA graphs: shapes must not change)."""
        if self._cuda_graphs:
            return self.bundle.lm.text_card, self.bundle.lm.card
        settings = [slot.session.settings for slot in self._slots if slot is not None]
        return max(s.text_topk for s in settings), max(s.audio_topk for s in settings)

    def _text_piece(self, token: int) -> str:
        if token in (TEXT_PADDING_ID, TEXT_END_OF_PADDING_ID):
            return ""
        return self.bundle.tokenizer.id_to_piece(token).replace("\u2581", " ")

    def _held_slots(self) -> int:
        """Slots taken by live and waiting sessions (the caller holds self._lock).

        A session that asked to close holds none: its slot is freed at the next tick's `_retire`,
        which runs before `_admit`, so a caller who reconnects at once is seated at that same tick.
        """
        seated = sum(slot is not None and not slot.session._wants_close for slot in self._slots)
        return seated + sum(not session._wants_close for session, _, _ in self._pending)

    def _check_open(self) -> None:
        """Raise EngineUnavailableError once the engine failed or was closed (the caller holds self._lock)."""
        if self._failure is not None:
            raise EngineUnavailableError(f"the engine failed ({self._failure}) and takes no sessions")
        if self._closed:
            raise EngineUnavailableError("the engine is closed")

    def _check_room(self) -> None:
        """Raise unless a new session may reserve a slot now (the caller holds self._lock)."""
        self._check_open()
        if self._held_slots() >= self.capacity:
            self._metrics.sessions_refused += 1
            raise EngineFullError(f"all {self.capacity} session slots are taken; retry later")

    def _fail(self, error: Exception) -> None:
        """A tick raised: refuse new sessions from now on, then end every session ('engine_failed')."""
        with self._lock:
            self._failure = f"{type(error).__name__}: {error}"
        self._end_all("engine_failed")

    def _end_all(self, reason: str) -> None:
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        for session, _, adapter in pending:
            if adapter is not None:
                self._adapters.unwant(adapter)
            session._end(reason)
        for index, slot in enumerate(self._slots):
            if slot is not None:
                self._free(index, reason)


class _SlotParams:
    """Per-slot sampling settings and recent text tokens, as [B] tensors on the model's device."""

    def __init__(self, batch: int, context_max: int, device: torch.device):
        def zeros(dtype):
            return torch.zeros(batch, dtype=dtype, device=device)

        self.text = SamplingParams(zeros(torch.float32), torch.ones(batch, dtype=torch.long, device=device),
                                   zeros(torch.long))
        self.audio = SamplingParams(zeros(torch.float32), torch.ones(batch, dtype=torch.long, device=device),
                                    zeros(torch.long))
        self.penalty = torch.ones(batch, device=device)
        self.pad_mult = zeros(torch.float32)  # Kyutai's: log of the factor on the padding probability
        self.context = torch.ones(batch, dtype=torch.long, device=device)
        self.recent = torch.full((batch, context_max), -1, dtype=torch.long, device=device)

    def set(self, index: int, settings: SessionSettings) -> None:
        self.text.temperature[index] = settings.text_temperature
        self.text.top_k[index] = settings.text_topk
        self.text.seed[index] = settings.text_seed
        self.audio.temperature[index] = settings.audio_temperature
        self.audio.top_k[index] = settings.audio_topk
        self.audio.seed[index] = settings.audio_seed
        self.penalty[index] = settings.repetition_penalty
        self.pad_mult[index] = settings.pad_mult
        self.context[index] = settings.repetition_penalty_context
        self.recent[index] = -1

    def biases(self) -> TextBiases:
        width = self.recent.shape[1]
        in_context = torch.arange(width, device=self.recent.device)[None] >= width - self.context[:, None]
        return TextBiases(torch.where(in_context, self.recent, -1), self.penalty, self.pad_mult)

    def remember_text(self, text: torch.Tensor, active: torch.Tensor) -> None:
        is_word = active & (text != TEXT_PADDING_ID) & (text != TEXT_END_OF_PADDING_ID)
        shifted = torch.cat([self.recent[:, 1:], text[:, None]], dim=1)
        self.recent = torch.where(is_word[:, None], shifted, self.recent)


def _mask(batch: int, indices: list[int], device: torch.device) -> torch.Tensor:
    mask = torch.zeros(batch, dtype=torch.bool)
    mask[indices] = True
    return mask.to(device)


def _session_counters(session: Session) -> collections.Counter:
    stats = session.stats
    return collections.Counter(frames_out=stats.frames_out, frames_dropped=stats.frames_dropped,
                               input_underruns=stats.input_underruns, audio_refused=stats.audio.refused,
                               audio_repaired=stats.audio.repaired)
