"""Real Ogg/Opus pages for the protocol tests and the attack suite, and well-formed pages carrying one bad field."""

from __future__ import annotations

import numpy as np
import sphn

from plexray.model.prompt import SAMPLE_RATE
from plexray.serve.app import binary_protocol as binary

OPUS_HEAD_AT = 28  # the OpusHead packet in the first page: 27-byte page header + a 1-entry segment table


def tone(seconds: float) -> np.ndarray:
    """A 220 Hz tone, float32 at 24 kHz."""
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE)).astype(np.float32)


def opus_pages(seconds: float = 1.0) -> list[bytes]:
    """A real sphn Ogg/Opus stream of a tone, page by page: OpusHead, OpusTags, then audio pages."""
    return [page.raw for page in binary.split_ogg_pages(sphn.OpusStreamWriter(SAMPLE_RATE).append_pcm(tone(seconds)))]


def with_byte(page: bytes, offset: int, value: int) -> bytes:
    """`page` with one byte changed and its CRC recomputed: well-formed Ogg carrying a bad field."""
    changed = bytearray(page)
    changed[offset] = value
    changed[22:26] = bytes(4)
    changed[22:26] = binary.ogg_crc(bytes(changed)).to_bytes(4, "little")
    return bytes(changed)
