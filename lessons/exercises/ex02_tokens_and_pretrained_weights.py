"""
Exercises for lesson 02: tokens and pretrained weights.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 02
"""

import json  # noqa: F401 (you will need these)
import struct  # noqa: F401

import torch  # noqa: F401


def conv1d_to_linear(weight):
    """
    A Conv1D layer computes y = x @ weight + b with weight stored (in, out). Return the weight
    that makes torch.nn.functional.linear(x, new_weight, b) compute the same y.
    """
    raise NotImplementedError("TODO")


def greedy_decode(model, idx, n):
    """
    Append n tokens to idx (B, T) by greedy decoding: at each step run the model, take the most
    likely next token at the last position, append it. Return the (B, T + n) tensor.
    Do not call model.generate: `logits, _ = model(idx)` gives logits of shape (B, T, V).
    """
    raise NotImplementedError("TODO")


def next_token_entropy(logits, temperature):
    """
    An experiment: how unsure is sampling at a given temperature?

    logits (..., V) are next-token scores. Sampling at temperature τ draws from softmax(logits / τ).
    Return the entropy of that distribution, H = -Σ p log p in nats, one number per row (shape
    (...)). Measure it on a model's logits at τ = 0.5, 1 and 2, and explain what greedy decoding
    (τ -> 0) and τ -> ∞ do to it. An answer that can be log(0) is not finished.
    """
    raise NotImplementedError("TODO")
