"""The compact GPT-2: parameter counts, shapes, the loss, generation."""

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_gpt
from loraxs_mini import GPT, GPTConfig, LoraxsError
from loraxs_mini.model import IGNORE_INDEX


def gpt2_parameter_count(V, T, L, C):
    # Counted by hand: embeddings, then per block 2 LayerNorms (4C), c_attn (3C*C + 3C), attn c_proj
    # (C*C + C), c_fc (4C*C + 4C), mlp c_proj (4C*C + C); then the final LayerNorm. The head is tied.
    per_block = 4 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C) + (4 * C * C + C)
    return V * C + T * C + L * per_block + 2 * C


@pytest.mark.parametrize(
    "name, expected",
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", gpt2_parameter_count(50257, 1024, 36, 1280)),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_preset_parameter_counts_on_meta_device(name, expected):
    with torch.device("meta"):  # shapes only: no memory is allocated
        model = GPT(GPTConfig.from_name(name))
    assert model.num_parameters() == expected
    assert model.lm_head.weight is model.transformer.wte.weight


def test_hand_formula_agrees_with_the_published_count():
    assert gpt2_parameter_count(50257, 1024, 12, 768) == 124_439_808


def test_construction_prints_nothing(capsys):
    GPT(GPTConfig.from_name("tiny"))
    assert capsys.readouterr().out == ""


def test_forward_shapes_and_loss_on_scored_positions_only():
    model = tiny_gpt().eval()
    idx = torch.randint(0, 50257, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 50257) and loss is None

    targets = torch.full((3, 10), IGNORE_INDEX)
    targets[:, 6:] = torch.randint(0, 50257, (3, 4))  # score only the last four positions
    scored_logits, loss = model(idx, targets)
    assert scored_logits.shape == (12, 50257)
    expected = F.cross_entropy(logits.reshape(-1, 50257), targets.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected)


def test_attention_is_causal():
    model = tiny_gpt().eval()
    idx = torch.randint(0, 50257, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 50257
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])  # the past never sees the future
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_greedy_generation_picks_the_argmax_step_by_step():
    model = tiny_gpt().eval()
    prompt = torch.randint(0, 50257, (2, 5))
    out = model.generate(prompt, 6)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        for t in range(5, 11):
            logits, _ = model(out[:, :t])
            assert torch.equal(out[:, t], logits[:, -1].argmax(-1))


def test_sampling_with_top_k_one_is_greedy_and_sampling_is_seeded():
    model = tiny_gpt().eval()
    prompt = torch.randint(0, 50257, (2, 5))
    greedy = model.generate(prompt, 5)
    assert torch.equal(model.generate(prompt, 5, temperature=1.0, top_k=1), greedy)
    first = model.generate(prompt, 5, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(1))
    second = model.generate(prompt, 5, temperature=1.0, top_k=50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, second)


def test_top_k_sampling_only_draws_from_the_k_most_likely():
    model = tiny_gpt().eval()
    prompt = torch.randint(0, 50257, (1, 4)).repeat(64, 1)
    with torch.no_grad():
        top3 = set(model(prompt[:1])[0][0, -1].topk(3).indices.tolist())
    drawn = model.generate(prompt, 1, temperature=5.0, top_k=3, generator=torch.Generator().manual_seed(0))[:, -1]
    assert set(drawn.tolist()) <= top3 and len(set(drawn.tolist())) > 1


def test_generation_crops_to_the_context():
    model = tiny_gpt().eval()
    prompt = torch.randint(0, 50257, (1, model.config.block_size))
    assert model.generate(prompt, 3).shape == (1, model.config.block_size + 3)


def test_too_long_sequence_is_a_clear_error():
    model = tiny_gpt()
    with pytest.raises(LoraxsError, match="longer than this model's context of 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(LoraxsError, match="unknown model preset 'gpt3'"):
        GPTConfig.from_name("gpt3")
