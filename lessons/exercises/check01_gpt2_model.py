"""
The checks of lesson 01 (the model): python lessons/check.py 01

Each check_<name> runs your function <name> from ex01_gpt2_model.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import torch
import torch.nn.functional as F

from check import close, tiny_model


def check_causal_attention(module):
    """
    token t may look only at tokens 0..t: give the other scores a value that softmax turns into a weight of exactly
    0, and remember the scale 1 / sqrt(D)
    """
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)  # (B, H, T, D) each
    close(module.causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), "the output")


def check_gelu_tanh(module):
    """write the docstring's formula term by term; at x = 0 it gives 0, at x = 3 almost 3, at x = -3 almost 0"""
    x = torch.linspace(-6, 6, 101)
    close(module.gelu_tanh(x), F.gelu(x, approximate="tanh"), "gelu_tanh(x)")


def check_position_sensitivity(module):
    """
    run the model on idx and on a copy with one column changed; compare the two logits tensors position by position,
    reducing over the batch and the vocabulary
    """
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (2, 12))
    reached = []
    for position in (0, 5, 11):
        changed = idx.clone()
        changed[:, position] = (changed[:, position] + 1) % 50257
        with torch.no_grad():
            expected = (model(changed)[0] - model(idx)[0]).abs().amax(dim=(0, 2))
        measured = module.position_sensitivity(model, idx.clone(), position)
        close(measured, expected, f"the changes for position {position}")
        # What it measures: a token reaches itself and the positions after it, never the ones before.
        assert torch.all(measured[:position] == 0) and torch.all(measured[position:] > 0)
        reached.append(f"token {position} moved {int((measured > 0).sum())} of 12 positions")
    return ", ".join(reached) + ": itself and every later one, none before it"
