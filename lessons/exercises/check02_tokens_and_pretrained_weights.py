"""
The checks of lesson 02 (tokens and weights): python lessons/check.py 02

Each check_<name> runs your function <name> from ex02_tokens_and_pretrained_weights.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import math

import torch
import torch.nn.functional as F

from check import close, tiny_model


def check_conv1d_to_linear(module):
    """compare the shapes: which dimension of Conv1D's weight is the input, and which of nn.Linear's?"""
    weight, bias, x = torch.randn(6, 10), torch.randn(10), torch.randn(4, 6)
    converted = module.conv1d_to_linear(weight)
    close(F.linear(x, converted, bias), x @ weight + bias, "the layer's output")


def check_greedy_decode(module):
    """one new token per turn of a loop; only the last position's logits say what comes next"""
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (2, 5))
    with torch.no_grad():
        got = module.greedy_decode(model, idx, 6)
    expected = model.generate(idx, 6)
    assert isinstance(got, torch.Tensor) and torch.equal(got, expected), "not the greedy continuation"


def check_next_token_entropy(module):
    """
    divide the logits by the temperature before the softmax; the entropy is -Σ p log p over the last dimension, and
    log_softmax gives log p without log(0)
    """
    torch.manual_seed(0)
    logits = 4 * torch.randn(3, 50257)
    logits[0, 7] = 1e4  # one row with a certain winner: p of everything else underflows to 0
    entropies = []
    for temperature in (0.5, 1.0, 2.0):
        expected = torch.distributions.Categorical(logits=logits / temperature).entropy()
        measured = module.next_token_entropy(logits, temperature)
        close(measured, expected, f"the entropy at temperature {temperature}", atol=1e-3)
        entropies.append(measured)
    # What it measures: hotter sampling is less sure, up to log V (uniform); greedy is the limit of no doubt.
    assert torch.all(entropies[0][1:] < entropies[1][1:]) and torch.all(entropies[1][1:] < entropies[2][1:])
    assert entropies[2].max() <= math.log(50257) and entropies[0][0] < 1e-3
    means = ", ".join(f"τ = {t}: {e[1:].mean():.2f}" for t, e in zip((0.5, 1.0, 2.0), entropies))
    return f"mean entropy {means} nats (uniform: {math.log(50257):.2f})"
