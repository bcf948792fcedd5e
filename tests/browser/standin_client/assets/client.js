// A stand-in for NVIDIA's web client, written for the tests (none of NVIDIA's code). It talks to
// /api/chat as that client does: the same URL on the page's own host:port, the same query string
// in the same order, the same binary protocol (wait for the 0x00 handshake, then send the
// microphone as 0x01 + Ogg/Opus pages; receive 0x01 audio and 0x02 text). It shows what arrived,
// on the page and in `window.standinClient` for the test.

const state = {
  phase: "loading", url: null, handshake: false, audioMessagesReceived: 0, oggPagesSent: 0, text: "",
  serverError: null, closeCode: null, closeReason: null, failure: null,
};
window.standinClient = state;

function show() {
  document.getElementById("status").textContent = state.phase;
  document.getElementById("audio-received").textContent = String(state.audioMessagesReceived);
  document.getElementById("pages-sent").textContent = String(state.oggPagesSent);
  document.getElementById("transcript").textContent = state.text;
}

function fail(what, error) {
  state.failure = `${what}: ${error}`;
  state.phase = "failed";
  show();
}

// The URL NVIDIA's client builds for a new conversation with its default settings: seeds are random.
function chatUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = new URL(`${scheme}://${location.hostname}:${location.port}/api/chat`);
  const randomSeed = () => Math.round(1000000 * Math.random());
  const parameters = [
    ["text_temperature", 0.7], ["text_topk", 25], ["audio_temperature", 0.8], ["audio_topk", 250],
    ["pad_mult", 0], ["text_seed", randomSeed()], ["audio_seed", randomSeed()],
    ["repetition_penalty_context", 64], ["repetition_penalty", 1.0],
    ["text_prompt", "You enjoy a friendly chat and answer briefly."], ["voice_prompt", "NATF0.pt"],
  ];
  for (const [name, value] of parameters) url.searchParams.append(name, value.toString());
  return url.toString();
}

// ----- Ogg pages (RFC 3533) around Opus packets (RFC 7845), one packet per page ------------------
const CRC_TABLE = new Uint32Array(256).map((_, index) => {
  let remainder = index << 24;
  for (let bit = 0; bit < 8; bit++) remainder = remainder & 0x80000000 ? (remainder << 1) ^ 0x04c11db7 : remainder << 1;
  return remainder >>> 0;
});

function oggCrc(bytes) {
  let crc = 0;
  for (const byte of bytes) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ byte) & 0xff]) >>> 0;
  return crc;
}

class OggOpusStream {
  constructor(channels, inputSampleRate) {
    this.channels = channels;
    this.inputSampleRate = inputSampleRate;
    this.serial = Math.floor(Math.random() * 0xffffffff);
    this.sequence = 0;
    this.granule = 0; // samples at 48 kHz, as Opus counts them
  }

  page(packet, flags) {
    const segments = Math.floor(packet.length / 255) + 1; // lacing: 255, 255, ..., remainder
    const page = new Uint8Array(27 + segments + packet.length);
    const view = new DataView(page.buffer);
    page.set([0x4f, 0x67, 0x67, 0x53]); // "OggS"
    page[5] = flags;
    view.setBigUint64(6, BigInt(this.granule), true);
    view.setUint32(14, this.serial, true);
    view.setUint32(18, this.sequence++, true);
    page[26] = segments;
    page.fill(255, 27, 27 + segments - 1);
    page[27 + segments - 1] = packet.length % 255;
    page.set(packet, 27 + segments);
    view.setUint32(22, oggCrc(page), true); // computed with the checksum field still zero
    return page;
  }

  headerPages() {
    const head = new Uint8Array(19);
    const view = new DataView(head.buffer);
    head.set(new TextEncoder().encode("OpusHead"));
    head[8] = 1; // version
    head[9] = this.channels;
    view.setUint16(10, 312, true); // pre-skip: the encoder's usual look-ahead at 48 kHz
    view.setUint32(12, this.inputSampleRate, true);
    const vendor = new TextEncoder().encode("standin-client");
    const tags = new Uint8Array(8 + 4 + vendor.length + 4);
    tags.set(new TextEncoder().encode("OpusTags"));
    new DataView(tags.buffer).setUint32(8, vendor.length, true);
    tags.set(vendor, 12);
    return [this.page(head, 0x02 /* beginning of stream */), this.page(tags, 0)];
  }

  audioPage(packet, samplesAt48k) {
    this.granule += samplesAt48k;
    return this.page(packet, 0);
  }
}

// The first channel of a microphone frame (Chromium's fake microphone may deliver stereo).
function monoFrame(frame) {
  const samples = new Float32Array(frame.numberOfFrames);
  frame.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
  return new AudioData({ format: "f32-planar", sampleRate: frame.sampleRate, numberOfFrames: frame.numberOfFrames,
                         numberOfChannels: 1, timestamp: frame.timestamp, data: samples });
}

// ----- the conversation --------------------------------------------------------------------------
function sendAudio(socket, page) {
  const message = new Uint8Array(1 + page.length);
  message[0] = 0x01;
  message.set(page, 1);
  socket.send(message);
  state.oggPagesSent += 1;
}

// The microphone as Opus: WebCodecs' AudioEncoder, fed the track's frames as they come.
async function streamMicrophone(socket) {
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const reader = new MediaStreamTrackProcessor({ track: stream.getAudioTracks()[0] }).readable.getReader();
  let encoder = null;
  let ogg = null;
  while (socket.readyState === WebSocket.OPEN) {
    const { value: frame, done } = await reader.read();
    if (done) break;
    const mono = monoFrame(frame); // NVIDIA's client records mono (opus-recorder numberOfChannels: 1)
    frame.close();
    if (encoder === null) {
      ogg = new OggOpusStream(1, mono.sampleRate);
      for (const page of ogg.headerPages()) sendAudio(socket, page);
      encoder = new AudioEncoder({
        output: (chunk) => {
          const packet = new Uint8Array(chunk.byteLength);
          chunk.copyTo(packet);
          if (socket.readyState === WebSocket.OPEN) sendAudio(socket, ogg.audioPage(packet, Math.round(chunk.duration * 0.048)));
        },
        error: (error) => fail("opus encoder", error),
      });
      encoder.configure({ codec: "opus", sampleRate: mono.sampleRate, numberOfChannels: 1, bitrate: 32000 });
    }
    encoder.encode(mono);
    mono.close();
  }
}

function converse() {
  state.url = chatUrl();
  const socket = new WebSocket(state.url);
  socket.binaryType = "arraybuffer";
  state.phase = "connecting";
  socket.onmessage = (event) => {
    const message = new Uint8Array(event.data);
    const kind = message[0];
    if (kind === 0x00) {
      state.handshake = true;
      state.phase = "talking";
      streamMicrophone(socket).catch((error) => fail("microphone", error));
    } else if (kind === 0x01) {
      state.audioMessagesReceived += 1;
    } else if (kind === 0x02) {
      state.text += new TextDecoder().decode(message.subarray(1));
    } else if (kind === 0x05) {
      state.serverError = new TextDecoder().decode(message.subarray(1));
    }
    show();
  };
  socket.onclose = (event) => {
    state.closeCode = event.code;
    state.closeReason = event.reason;
    if (state.phase !== "failed") state.phase = "closed";
    show();
  };
  show();
}

converse();
