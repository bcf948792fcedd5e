"""The streaming generation step against LMModel.forward: same codes in, same logits out."""

from __future__ import annotations

import pytest
import torch

from plexray.model.architectures import NUM_AUDIO_CODEBOOKS
from plexray.model.inputs import input_embeddings, transformer_inputs
from engine_helpers import sampling_params, step_teacher_forced
from plexray.serve.engine.batched_lm import BatchedLM, Forced, TextBiases

FRAMES = 14
PREFILLED = 6  # positions 0..5 through the chunked prefill path, the rest step by step


@pytest.mark.parametrize("family", ["personaplex", "moshi"])
def test_teacher_forced_streaming_matches_forward(family, request):
    """Slot 1 replays random codes (prefill + steps) while slots 0 and 2 generate freely beside it."""
    bundle = request.getfixturevalue("engine_bundle" if family == "personaplex" else "moshi_bundle")
    lm = bundle.lm
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, lm.card, (lm.num_codebooks, FRAMES), generator=generator)
    codes[0] = torch.randint(0, lm.text_card, (FRAMES,), generator=generator)
    with torch.no_grad():
        reference = lm(codes[None])
    batch, slot = 3, 1
    engine_lm = BatchedLM(lm, batch)
    try:
        active = torch.tensor([True, False, True])
        biases = TextBiases(torch.full((batch, 4), -1, dtype=torch.long), torch.ones(batch), torch.zeros(batch))
        no_force = Forced(torch.zeros(batch, dtype=torch.long), torch.zeros(batch, dtype=torch.bool),
                          torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.long),
                          torch.zeros(batch, NUM_AUDIO_CODEBOOKS, dtype=torch.bool))
        for _ in range(3):  # the neighbours are already talking when slot 1 joins
            engine_lm.step(active, sampling_params(batch), sampling_params(batch), biases, no_force, (50, 50))
        engine_lm.reset_slot(slot)
        with torch.no_grad():
            embeddings = input_embeddings(lm, transformer_inputs(lm, codes[None]))[0]
        engine_lm.prefill(slot, embeddings[:PREFILLED])
        engine_lm.write_columns(slot, codes[:, PREFILLED - 2:PREFILLED], PREFILLED - 2)

        for position in range(PREFILLED, FRAMES):
            out = step_teacher_forced(engine_lm, codes, position, slot)

            torch.testing.assert_close(out.text_logits[slot], reference.text_logits[0, 0, position],
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.audio_logits[slot, 0], reference.logits[0, 0, position],
                                       atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(out.audio_logits[slot, 1:], reference.logits[0, 1:NUM_AUDIO_CODEBOOKS,
                                                                                   position - 1],
                                       atol=1e-4, rtol=1e-4)
    finally:
        engine_lm.close()
