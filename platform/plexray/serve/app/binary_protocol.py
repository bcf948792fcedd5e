"""The PersonaPlex/moshi binary WebSocket protocol of `/api/chat`: one kind byte, then a payload.

Server -> client: 0x00 handshake (after the prompt prefill), 0x01 + Ogg/Opus pages (24 kHz mono),
0x02 + UTF-8 text piece, 0x05 + UTF-8 error text, 0x06 (the answer to a ping). Never 0x04: NVIDIA's
client parses every 0x04 as Kyutai's server-info record and logs an error for anything else.
Client -> server: 0x01 + whole Ogg/Opus pages; 0x03 + one control byte (start, endTurn, pause, restart);
0x04 + JSON metadata; 0x05 + UTF-8 error text; 0x06 ping (answered with 0x06).
The kinds and control values are those of NVIDIA's and Kyutai's web clients.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing as tp

import numpy as np
import sphn

from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.app.errors import ProtocolError


class Kind(enum.IntEnum):
    HANDSHAKE = 0x00
    AUDIO = 0x01
    TEXT = 0x02
    CONTROL = 0x03
    METADATA = 0x04
    ERROR = 0x05
    PING = 0x06


class Control(enum.IntEnum):
    START = 0x00
    END_TURN = 0x01
    PAUSE = 0x02
    RESTART = 0x03


@dataclasses.dataclass(frozen=True)
class ClientMessage:
    kind: Kind
    payload: bytes = b""
    control: Control | None = None  # for CONTROL
    metadata: dict | None = None  # for METADATA


def decode_client_message(message: bytes) -> ClientMessage:
    """Parse one client message, or raise ProtocolError naming what is wrong with it."""
    if not message:
        raise ProtocolError("empty message: expected a kind byte (0x01 audio, 0x03 control, 0x04 metadata, "
                            "0x05 error, 0x06 ping)")
    kind_byte, payload = message[0], bytes(message[1:])
    try:
        kind = Kind(kind_byte)
    except ValueError:
        raise ProtocolError(f"unknown message kind 0x{kind_byte:02x}") from None
    if kind in (Kind.HANDSHAKE, Kind.TEXT):
        raise ProtocolError(f"message kind 0x{kind_byte:02x} ({kind.name.lower()}) is sent by the server only")
    if kind is Kind.CONTROL:
        if len(payload) != 1:
            raise ProtocolError(f"control message: expected one action byte, got {len(payload)} bytes")
        try:
            return ClientMessage(kind, payload, control=Control(payload[0]))
        except ValueError:
            raise ProtocolError(f"control message: unknown action 0x{payload[0]:02x}") from None
    if kind is Kind.METADATA:
        try:
            metadata = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProtocolError(f"metadata message: not UTF-8 JSON ({exc})") from None
        if not isinstance(metadata, dict):
            raise ProtocolError("metadata message: expected a JSON object")
        return ClientMessage(kind, payload, metadata=metadata)
    if kind is Kind.ERROR:
        return ClientMessage(kind, payload.decode("utf-8", errors="replace").encode())
    return ClientMessage(kind, payload)


def handshake() -> bytes:
    return bytes([Kind.HANDSHAKE])


def audio(opus_pages: bytes) -> bytes:
    return bytes([Kind.AUDIO]) + opus_pages


def text(piece: str) -> bytes:
    return bytes([Kind.TEXT]) + piece.encode("utf-8")


def error(message: str) -> bytes:
    return bytes([Kind.ERROR]) + message.encode("utf-8")


def ping() -> bytes:
    return bytes([Kind.PING])


OGG_CAPTURE_PATTERN = b"OggS"


class OpusDecoder:
    """Client Ogg/Opus pages -> float32 PCM at 24 kHz. Bad bytes raise ProtocolError and reset the stream.

    sphn's reader stays broken after undecodable input, so a fresh one replaces it: the session goes
    on with the client's next stream (a client restarting its recorder sends new Ogg headers).
    """

    def __init__(self) -> None:
        self._reader = sphn.OpusStreamReader(SAMPLE_RATE)

    def decode(self, pages: bytes) -> np.ndarray:
        # Clients send whole pages (NVIDIA's recorder and sphn's writer both do): checking the capture
        # pattern refuses garbage before it reaches, and corrupts, the reader's buffer.
        if not pages.startswith(OGG_CAPTURE_PATTERN):
            raise ProtocolError("audio message: expected whole Ogg pages (starting with 'OggS') of an Opus stream")
        try:
            pcm = self._reader.append_bytes(pages)
        except Exception as exc:  # noqa: BLE001 - sphn raises ValueError and others for bad streams
            self._reader = sphn.OpusStreamReader(SAMPLE_RATE)
            raise ProtocolError(f"audio message: not a valid Ogg/Opus stream ({exc})") from None
        return np.asarray(pcm, dtype=np.float32)


class OpusEncoder:
    """Agent PCM (float32, 24 kHz) -> Ogg/Opus pages; returns b'' while a page is still filling."""

    def __init__(self) -> None:
        self._writer = sphn.OpusStreamWriter(SAMPLE_RATE)

    def encode(self, pcm: np.ndarray) -> bytes:
        return self._writer.append_pcm(np.asarray(pcm, dtype=np.float32))


# Query parameters of NVIDIA's client and what SessionSettings field each sets.
QUERY_FIELDS: dict[str, str] = {
    "text_prompt": "text_prompt", "voice_prompt": "voice",
    "text_temperature": "text_temperature", "text_topk": "text_topk",
    "audio_temperature": "audio_temperature", "audio_topk": "audio_topk", "pad_mult": "pad_mult",
    "text_seed": "text_seed", "audio_seed": "audio_seed",
    "repetition_penalty": "repetition_penalty", "repetition_penalty_context": "repetition_penalty_context",
}


def session_overrides(query: tp.Mapping[str, str]) -> dict[str, str]:
    """SessionSettings field -> raw value, for every protocol query parameter present and non-empty.

    voice_prompt may name a file (NVIDIA's client sends 'NATF2.pt'): the extension is dropped.
    """
    overrides: dict[str, str] = {}
    for parameter, field in QUERY_FIELDS.items():
        value = query.get(parameter)
        if value is None or value == "":
            continue
        if field == "voice":
            for suffix in (".pt", ".wav"):
                value = value.removesuffix(suffix)
        overrides[field] = value
    return overrides
