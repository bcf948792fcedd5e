"""Both protocols' codecs, without a server: every client message kind, every malformed input."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import sphn

from plexray.serve.app import binary_protocol as binary
from plexray.serve.app import json_protocol
from plexray.serve.app.errors import ProtocolError


def test_binary_client_messages_decode_by_kind():
    assert binary.decode_client_message(b"\x01OggS...").payload == b"OggS..."
    assert binary.decode_client_message(b"\x03\x02").control is binary.Control.PAUSE
    assert binary.decode_client_message(b'\x04{"client": "web"}').metadata == {"client": "web"}
    assert binary.decode_client_message(b"\x05mic failed").payload == b"mic failed"
    assert binary.decode_client_message(b"\x06").kind is binary.Kind.PING


@pytest.mark.parametrize("message, problem", [
    (b"", "empty message"), (b"\x07", "unknown message kind 0x07"), (b"\xff", "unknown message kind 0xff"),
    (b"\x00", "sent by the server only"), (b"\x02hi", "sent by the server only"),
    (b"\x03", "one action byte"), (b"\x03\x09", "unknown action 0x09"),
    (b"\x04not json", "not valid JSON"), (b"\x04[1, 2]", "expected a JSON object"),
])
def test_malformed_binary_messages_are_named(message, problem):
    with pytest.raises(ProtocolError, match=problem):
        binary.decode_client_message(message)


def test_server_messages_have_the_reference_layout():
    assert binary.handshake() == b"\x00"
    assert binary.text("héllo") == b"\x02" + "héllo".encode()
    assert binary.error("busy") == b"\x05busy"
    assert binary.ping() == b"\x06"


def test_opus_round_trip_and_bad_pages_reset_the_decoder():
    tone = (0.3 * np.sin(2 * np.pi * 220 * np.arange(24000) / 24000)).astype(np.float32)
    encoder, decoder = binary.OpusEncoder(), binary.OpusDecoder()
    pages = encoder.encode(tone)
    decoded = decoder.decode(pages)
    assert decoded.dtype == np.float32 and decoded.size > 0
    with pytest.raises(ProtocolError, match="Ogg pages"):
        decoder.decode(b"garbage" * 10)
    with pytest.raises(ProtocolError, match="not a valid Ogg/Opus stream"):
        decoder.decode(b"OggS" + bytes(60))
    fresh_stream = sphn.OpusStreamWriter(24000).append_pcm(tone)  # after the reset, a new stream decodes
    assert decoder.decode(fresh_stream).size > 0


def test_query_parameters_map_to_session_settings():
    query = {"text_prompt": "Be brief.", "voice_prompt": "NATF2.pt", "text_temperature": "0.5", "text_topk": "10",
             "audio_temperature": "0.6", "audio_topk": "100", "pad_mult": "2", "text_seed": "1", "audio_seed": "2",
             "repetition_penalty": "1.2", "repetition_penalty_context": "16", "api_key": "secret", "empty": ""}
    overrides = binary.session_overrides(query)
    assert overrides["voice"] == "NATF2" and overrides["text_prompt"] == "Be brief."
    assert set(overrides) == set(binary.QUERY_FIELDS.values())


def test_json_client_messages():
    pcm = np.linspace(-1, 1, 1920, dtype=np.float32)
    message = json_protocol.decode_client_message(json_protocol.encode_client_audio(pcm))
    np.testing.assert_array_equal(message.pcm, pcm)
    pcm16 = np.arange(10, dtype="<i2")
    message = json_protocol.decode_client_message(json.dumps(
        {"type": "audio_chunk", "format": "pcm16", "sample_rate": 16000,
         "data": base64.b64encode(pcm16.tobytes()).decode()}))
    assert message.pcm.dtype == np.int16 and message.sample_rate == 16000
    for kind in ("interrupt", "ping", "end"):
        assert json_protocol.decode_client_message(json.dumps({"type": kind})).type == kind


@pytest.mark.parametrize("raw, problem", [
    ("{", "not valid JSON"), ("[1]", "JSON object"), ('{"type": "dance"}', "unknown message type 'dance'"),
    ('{"type": "audio_chunk", "data": "***"}', "not valid base64"),
    ('{"type": "audio_chunk", "data": 5}', "base64 string"),
    ('{"type": "audio_chunk", "data": "AAA="}', "whole number of pcm samples"),
    ('{"type": "audio_chunk", "data": "", "format": "mp3"}', "unknown format 'mp3'"),
    ('{"type": "audio_chunk", "data": "", "sample_rate": "fast"}', "'sample_rate' must be an integer"),
])
def test_malformed_json_messages_are_named(raw, problem):
    with pytest.raises(ProtocolError, match=problem):
        json_protocol.decode_client_message(raw)


def test_json_server_messages():
    connected = json.loads(json_protocol.connected("assistant", "s1", "NATF2"))
    assert connected["type"] == "connected" and connected["capabilities"]["full_duplex"]
    pcm = np.full(1920, 0.25, np.float32)
    np.testing.assert_array_equal(json_protocol.decode_audio_chunk(json_protocol.audio_chunk(pcm, 3)), pcm)
    assert json.loads(json_protocol.error("busy", "busy", 5)) == {"type": "error", "message": "busy", "code": "busy",
                                                                  "retry_after_s": 5}
