"""The JSON WebSocket protocol of `/ws/voice/{persona}` (the ORBIT voice-adapter messages).

Client -> server: {"type": "audio_chunk", "data": base64 PCM, "format": "pcm" (float32 LE) or
"pcm16" (int16 LE), "sample_rate": 24000 (optional)}, {"type": "interrupt"}, {"type": "ping"},
{"type": "end"}.
Server -> client: connected (with capabilities), audio_chunk (base64 float32 PCM at 24 kHz,
chunk_index), transcription (text pieces, partial), interrupted, pong, error, ended.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json

import numpy as np

from plexray.model.prompt import FRAME_SAMPLES, SAMPLE_RATE
from plexray.serve.app.errors import ProtocolError

PCM_FORMATS = {"pcm": np.dtype("<f4"), "pcm16": np.dtype("<i2")}
CLIENT_TYPES = ("audio_chunk", "interrupt", "ping", "end")


@dataclasses.dataclass(frozen=True)
class ClientMessage:
    type: str
    pcm: np.ndarray | None = None  # audio_chunk: float32 or int16 samples, as sent
    sample_rate: int = SAMPLE_RATE


def decode_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one client message, or raise ProtocolError naming what is wrong with it.

    Every field is checked for its type before it is used: a caller may send any JSON at all.
    """
    message = parse_json(raw, "message")
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object with a 'type', got {describe(message)}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(f"'type' must be a string, got {describe(kind)}")
    if kind not in CLIENT_TYPES:
        raise ProtocolError(f"unknown message type {describe(kind)}; expected one of {list(CLIENT_TYPES)}")
    if kind != "audio_chunk":
        return ClientMessage(kind)
    audio_format = message.get("format", "pcm")
    if not isinstance(audio_format, str):
        raise ProtocolError(f"audio_chunk: 'format' must be a string, got {describe(audio_format)}")
    if audio_format not in PCM_FORMATS:
        raise ProtocolError(f"audio_chunk: unknown format {describe(audio_format)}; expected one of "
                            f"{list(PCM_FORMATS)}")
    data = message.get("data")
    if not isinstance(data, str):
        raise ProtocolError(f"audio_chunk: 'data' must be a base64 string, got {describe(data)}")
    try:
        raw_bytes = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(f"audio_chunk: 'data' is not valid base64 ({exc})") from None
    dtype = PCM_FORMATS[audio_format]
    if len(raw_bytes) % dtype.itemsize:
        raise ProtocolError(f"audio_chunk: {len(raw_bytes)} bytes is not a whole number of {audio_format} samples "
                            f"({dtype.itemsize} bytes each)")
    sample_rate = message.get("sample_rate", SAMPLE_RATE)
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool):
        raise ProtocolError(f"audio_chunk: 'sample_rate' must be an integer, got {describe(sample_rate)}")
    return ClientMessage(kind, np.frombuffer(raw_bytes, dtype=dtype), sample_rate)


def parse_json(raw: str | bytes, what: str) -> object:
    """json.loads for caller input: every way it can fail is a ProtocolError naming `what`.

    Besides malformed text, json.loads raises RecursionError for deep nesting and ValueError for an
    integer past Python's digit limit; both are the caller's doing, not a fault of this server.
    """
    try:
        return json.loads(raw)
    except RecursionError:
        raise ProtocolError(f"{what} is nested too deeply to be a protocol message") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{what} is not valid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not valid JSON (not UTF-8 text)") from None
    except ValueError:  # the int conversion limit: a number with thousands of digits
        raise ProtocolError(f"{what} is not valid JSON (a number with too many digits)") from None


def describe(value: object) -> str:
    """A caller's value for an error message: short, one line, never the whole input echoed back."""
    if isinstance(value, str):
        shown = repr(value[:40])  # repr: control characters escaped
        return shown + ("..." if len(value) > 40 else "")
    names = {dict: "an object", list: "an array", bool: "a boolean", int: "a number", float: "a number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def connected(persona: str, session_id: str, voice: str | None, knowledge: dict | None = None) -> str:
    """`knowledge`: what a grounded session's prompt holds (base, query and its source, passages, token counts
    and budget: grounding.Grounding.info); absent otherwise."""
    message = {
        "type": "connected", "adapter": persona, "session_id": session_id, "mode": "full_duplex",
        "audio_format": "pcm", "sample_rate": SAMPLE_RATE, "frame_samples": FRAME_SAMPLES, "voice": voice,
        "capabilities": {"full_duplex": True, "interruption": True, "backchannels": True,
                         "input_formats": list(PCM_FORMATS), "transcription": True},
    }
    if knowledge is not None:
        message["knowledge"] = knowledge
    return json.dumps(message)


def audio_chunk(pcm: np.ndarray, chunk_index: int) -> str:
    data = base64.b64encode(np.asarray(pcm, dtype="<f4").tobytes()).decode("ascii")
    return json.dumps({"type": "audio_chunk", "data": data, "format": "pcm", "sample_rate": SAMPLE_RATE,
                       "chunk_index": chunk_index})


def transcription(text: str) -> str:
    """A piece of the agent's text, as it is generated (always partial: the model never ends a turn)."""
    return json.dumps({"type": "transcription", "text": text, "partial": True, "speaker": "agent"})


def interrupted(reason: str) -> str:
    return json.dumps({"type": "interrupted", "reason": reason})


def pong() -> str:
    return json.dumps({"type": "pong"})


def error(message: str, code: str, retry_after_s: int | None = None) -> str:
    payload: dict = {"type": "error", "message": message, "code": code}
    if retry_after_s is not None:
        payload["retry_after_s"] = retry_after_s
    return json.dumps(payload)


def ended(reason: str) -> str:
    return json.dumps({"type": "ended", "reason": reason})


def decode_audio_chunk(message: str) -> np.ndarray:
    """Server audio_chunk -> float32 samples (for clients and tests)."""
    return np.frombuffer(base64.b64decode(json.loads(message)["data"]), dtype="<f4")


def encode_client_audio(pcm: np.ndarray) -> str:
    """Client audio_chunk of float32 samples (for clients and tests)."""
    return json.dumps({"type": "audio_chunk", "format": "pcm",
                       "data": base64.b64encode(np.asarray(pcm, dtype="<f4").tobytes()).decode("ascii")})
