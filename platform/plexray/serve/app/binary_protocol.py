"""The PersonaPlex/moshi binary WebSocket protocol of `/api/chat`: one kind byte, then a payload.

Server -> client: 0x00 handshake (after the prompt prefill), 0x01 + Ogg/Opus pages (24 kHz mono),
0x02 + UTF-8 text piece, 0x05 + UTF-8 error text, 0x06 (the answer to a ping), and for a grounded
session one 0x04 after the handshake: Kyutai's server-info record (NVIDIA's client parses every 0x04
as one and logs an error for any record that lacks a field of it), with the prompt's passages and
token counts under an extra key, `knowledge` (see `server_info`).
Client -> server: 0x01 + whole Ogg/Opus pages; 0x03 + one control byte (start, endTurn, pause, restart);
0x04 + JSON metadata; 0x05 + UTF-8 error text; 0x06 ping (answered with 0x06).
The kinds and control values are those of NVIDIA's and Kyutai's web clients.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.metadata
import json
import typing as tp
import zlib

import numpy as np
import sphn

from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.app import json_protocol
from plexray.serve.app.errors import ProtocolError
from plexray.serve.engine.config import SessionSettings


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
        metadata = json_protocol.parse_json(payload, "metadata message")
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


# The build_info fields of Kyutai's record: NVIDIA's client requires each (as a string); a Rust build's
# details, which this server has none of, so only git_describe says something (which server this is).
BUILD_INFO_FIELDS = ("build_timestamp", "build_date", "git_branch", "git_timestamp", "git_date", "git_hash",
                     "git_describe", "rustc_host_triple", "rustc_version", "cargo_target_triple")


def server_info(settings: SessionSettings, knowledge: dict) -> bytes:
    """0x04 + Kyutai's server-info record for the session's settings, every field NVIDIA's client requires
    as it requires it, plus `knowledge`: what the grounded session's prompt holds (passages and token
    counts, as in the JSON protocol's 'connected'); the client ignores keys it does not know."""
    record = {"text_temperature": settings.text_temperature, "text_topk": settings.text_topk,
              "audio_temperature": settings.audio_temperature, "audio_topk": settings.audio_topk,
              "pad_mult": settings.pad_mult, "repetition_penalty_context": settings.repetition_penalty_context,
              "repetition_penalty": settings.repetition_penalty,
              "lm_model_file": f"adapter {settings.adapter}" if settings.adapter else "base model",
              "instance_name": "plexray",
              "build_info": {field: "" for field in BUILD_INFO_FIELDS} | {"git_describe": f"plexray {_version()}"},
              "knowledge": knowledge}
    return bytes([Kind.METADATA]) + json.dumps(record).encode("utf-8")


def _version() -> str:
    try:
        return importlib.metadata.version("plexray")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


# ----- Ogg/Opus input (RFC 3533 pages, RFC 7845 Opus mapping) -----------------------------------
# sphn decodes whatever it is given and says nothing about corrupt, truncated or foreign streams, so
# the framing is checked here, before a byte reaches it: a bad message is refused whole, and the
# stream it belongs to goes on (nothing of the bad message was fed to the decoder).
OGG_CAPTURE_PATTERN = b"OggS"
OGG_HEADER_BYTES = 27  # up to and including the segment count
OGG_CONTINUED, OGG_FIRST_PAGE, OGG_LAST_PAGE = 0x01, 0x02, 0x04
OPUS_HEAD_BYTES = 19  # the identification header of channel mapping family 0


@dataclasses.dataclass(frozen=True)
class OggPage:
    flags: int
    serial: int
    body: bytes  # the page's packet data
    raw: bytes  # the whole page, as received


# Ogg's CRC-32 (polynomial 0x04C11DB7, not bit-reflected, initial value 0, no final xor) computed with
# zlib's reflected CRC-32: reflecting every input byte and the result turns one into the other, and
# zlib's C loop keeps the check cheap on the event loop.
_REFLECT_BYTE = bytes(int(f"{value:08b}"[::-1], 2) for value in range(256))


def ogg_crc(page: bytes) -> int:
    """The CRC of an Ogg page whose checksum field (bytes 22-25) is zeroed."""
    reflected = zlib.crc32(page.translate(_REFLECT_BYTE), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def split_ogg_pages(data: bytes) -> list[OggPage]:
    """The whole Ogg pages `data` consists of, each checked (version, completeness, checksum)."""
    if not data.startswith(OGG_CAPTURE_PATTERN):
        raise ProtocolError("audio message: expected whole Ogg pages (starting with 'OggS') of an Opus stream")
    pages, start = [], 0
    while start < len(data):
        if data[start:start + 4] != OGG_CAPTURE_PATTERN:
            raise _bad_stream(f"no Ogg page starts at byte {start}")
        if len(data) - start < OGG_HEADER_BYTES:
            raise _bad_stream(f"truncated Ogg page header at byte {start}")
        if data[start + 4] != 0:
            raise _bad_stream(f"Ogg page version {data[start + 4]} (only version 0 exists)")
        segment_count = data[start + 26]
        body_start = start + OGG_HEADER_BYTES + segment_count
        lacing = data[start + OGG_HEADER_BYTES:body_start]
        end = body_start + sum(lacing)
        if len(lacing) < segment_count or end > len(data):
            raise _bad_stream(f"truncated Ogg page at byte {start} (a message must hold whole pages)")
        raw = data[start:end]
        if ogg_crc(raw[:22] + bytes(4) + raw[26:]) != int.from_bytes(raw[22:26], "little"):
            raise _bad_stream(f"Ogg page at byte {start} fails its checksum (corrupt)")
        pages.append(OggPage(flags=raw[5], serial=int.from_bytes(raw[14:18], "little"),
                             body=data[body_start:end], raw=raw))
        start = end
    return pages


def check_opus_head(body: bytes) -> None:
    """RFC 7845 section 5.1, for what this endpoint takes: mono, channel mapping family 0."""
    if not body.startswith(b"OpusHead") or len(body) < OPUS_HEAD_BYTES:
        raise _bad_stream("the first page of a stream must carry an OpusHead packet")
    version, channels, mapping_family = body[8], body[9], body[18]
    if version >= 16:  # the upper four bits are the major version; only major version 0 is defined
        raise _bad_stream(f"OpusHead version {version} is not a version this server understands (0-15)")
    if channels != 1:
        raise _bad_stream(f"OpusHead says {channels} channels; this endpoint takes mono Opus (1 channel)")
    if mapping_family != 0 or len(body) != OPUS_HEAD_BYTES:
        raise _bad_stream(f"OpusHead: channel mapping family {mapping_family} (this endpoint takes family 0, a "
                          f"{OPUS_HEAD_BYTES}-byte header alone on its page)")


def _bad_stream(problem: str) -> ProtocolError:
    return ProtocolError(f"audio message: not a valid Ogg/Opus stream: {problem}")


class OpusDecoder:
    """Client Ogg/Opus pages -> float32 PCM at 24 kHz; a message that is not valid raises ProtocolError.

    Each message must hold whole pages (NVIDIA's recorder and sphn's writer both send them so). A
    stream starts with its OpusHead page, then OpusTags; a new OpusHead (a client restarting its
    recorder) starts a fresh stream and a fresh sphn reader.
    """

    def __init__(self) -> None:
        self._reader = sphn.OpusStreamReader(SAMPLE_RATE)
        self._serial: int | None = None  # the stream being decoded; None before its OpusHead
        self._tags_next = False  # its OpusHead was the last page: OpusTags must come next

    def decode(self, message: bytes) -> np.ndarray:
        pages = split_ogg_pages(message)
        serial, tags_next = self._serial, self._tags_next
        for page in pages:  # checked whole before any page is decoded
            if page.flags & OGG_FIRST_PAGE:
                check_opus_head(page.body)
                serial, tags_next = page.serial, True
            elif serial is None:
                raise _bad_stream("audio page before its OpusHead (a stream starts with its OpusHead page)")
            elif page.serial != serial:
                raise _bad_stream(f"page of stream {page.serial} inside stream {serial}")
            elif tags_next:
                if not page.body.startswith(b"OpusTags"):
                    raise _bad_stream("the page after the OpusHead must carry the OpusTags packet")
                tags_next = False
            if page.flags & OGG_LAST_PAGE:
                serial = None
        self._serial, self._tags_next = serial, tags_next
        pcm = []
        for page in pages:
            if page.flags & OGG_FIRST_PAGE:
                self._reader = sphn.OpusStreamReader(SAMPLE_RATE)
            pcm.append(self._decode_page(page))
        return np.concatenate(pcm)

    def _decode_page(self, page: OggPage) -> np.ndarray:
        try:
            return np.asarray(self._reader.append_bytes(page.raw), dtype=np.float32).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - sphn raises ValueError and others for input it cannot use
            # sphn's reader stays broken after an error: the client's next stream gets a fresh one.
            self._reader, self._serial = sphn.OpusStreamReader(SAMPLE_RATE), None
            raise _bad_stream(f"undecodable Opus data ({exc}); start a new stream with an OpusHead page") from None


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
