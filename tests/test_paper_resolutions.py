"""Scoring at the resolutions the paper uses, on the bundled real images: 32 px for NB201 and
224 px for the published 450M MobileNet-space network (whose channels_last batches once crashed
torch's CPU conv backward)."""
import random

import pytest
import torch

import zico_fast
from zico_fast.data import make_batches
from zico_fast.reference import gradient_stacks, zico_oracle
from zico_fast.spaces import get_space
from zico_fast.spaces.mobilenet import ZICO_450M


def test_nb201_at_32_pixels_matches_oracle():
    space = get_space("nb201")
    torch.manual_seed(0)
    model = space.build(space.random(random.Random(4)))
    batches = make_batches(batch_size=8, num_batches=2, seed=1)
    assert batches[0][0].shape[-1] == 32 and batches[0][0].is_contiguous()
    result = zico_fast.zico_score(model, batches)
    assert result.score == pytest.approx(zico_oracle(gradient_stacks(model, batches))[0], rel=1e-5)


@pytest.mark.slow
def test_published_450m_network_at_224_pixels():
    torch.manual_seed(0)
    model = get_space("mobilenet").build(ZICO_450M)
    batches = make_batches(batch_size=4, num_batches=2, resolution=224)
    assert batches[0][0].shape[-2:] == (224, 224) and batches[0][0].is_contiguous()
    # channels_last, the CPU engine's layout (this network has no conv that needs NCHW, see zico_fast.layout)
    channels_last = [(x.to(memory_format=torch.channels_last), y) for x, y in batches]
    result = zico_fast.zico_score(model, channels_last)
    assert result.score == pytest.approx(zico_oracle(gradient_stacks(model, channels_last))[0], rel=1e-5)
    assert len(result.layer_terms) > 50 and result.num_batches == 2
