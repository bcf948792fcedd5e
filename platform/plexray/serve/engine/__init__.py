"""The batched streaming engine: many full-duplex conversations on one model, one 80 ms tick at a time.

    from plexray.serve.engine import Engine, EngineConfig, SessionSettings, EngineFullError

    engine = Engine(bundle, EngineConfig(max_sessions=8))     # bundle: plexray.model.ModelBundle
    engine.capacity, engine.active_sessions, engine.metrics()  # metrics: tick p50/p99 ms, late, dropped, prefill ms
    session = engine.open_session(SessionSettings(text_prompt="You are ...", voice="NATF0"))  # EngineFullError if full
    asyncio.create_task(engine.run())        # real-time loop (ticks in a worker thread); engine.stop() ends it
    session.push_pcm(pcm)                    # float32 mono 24 kHz, any length; bad audio repaired or BadAudioError
    await session.wait_ready()               # prompt prefill done: send the handshake now
    out = await session.next_output()        # SessionOutput(pcm [1920] float32, text str), None once ended
    session.close(); session.ended_reason    # 'closed' | 'max_duration' | 'idle_timeout' |
                                             # 'engine_stopped' | 'engine_failed' (a tick raised: engine.failure)

`engine.tick()` advances every session by one frame synchronously (tests, benchmarks).
Each tick: batched Mimi encode of every live session's newest user frame (silence if none), one
batched LM step (temporal transformer + 8 agent depformer steps), batched Mimi decode; joining
sessions prefill their PersonaPlex prompt in chunks inside the same ticks. See `engine.py`.

Behaviour at the edges:
- Slow reader: at most `output_buffer_frames` frames wait for it; older ones are dropped and counted.
- Silent or stalled client: its user stream gets silence; after `idle_timeout_s` without any push_pcm
  the session ends ('idle_timeout'). A client far ahead of real time loses its oldest input (counted).
- Length: 'max_duration' after `max_session_s` (a policy, default 30 min). Past the LM context
  (3000 frames = 240 s) the prompt stays pinned and the conversation slides behind it
  (long_context.py): memory per slot is constant for any call length.
- Determinism: a session's tokens are a pure function of its seeds, prompt and audio for a given
  engine capacity, whoever else is in the batch (sampling noise is a counter-based hash of
  seed, frame position, stream and token id). Engines of different capacity may differ where float
  rounding of differently blocked kernels flips a near-tied code.
- Text: each SessionOutput carries the text token of the same 80 ms column as its audio.
- LoRA adapters (EngineConfig.adapters, SessionSettings.adapter): each session may run on its own adapter
  from a registry directory, all in the same batched step (batched_lora.py, adapters.py, docs/adapters.md).
"""

from plexray.serve.engine.config import EngineConfig, SessionSettings
from plexray.serve.engine.engine import Engine
from plexray.serve.engine.errors import BadAudioError, EngineFullError, EngineUnavailableError, SessionSettingsError
from plexray.serve.engine.session import Session, SessionOutput

__all__ = ["Engine", "EngineConfig", "SessionSettings", "Session", "SessionOutput", "EngineFullError",
           "BadAudioError", "SessionSettingsError", "EngineUnavailableError"]
