"""
Exercises for lesson 02: tokens and pretrained weights.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 02
"""

import json  # noqa: F401 (you will need these)
import struct  # noqa: F401

import torch  # noqa: F401


def read_safetensors_header(path):
    """
    Return the JSON header of the safetensors file at `path` as a dict, reading only what is needed:
    the first 8 bytes hold the header's length N (little-endian unsigned 64-bit), the next N bytes
    are the JSON text.
    """
    raise NotImplementedError("TODO")


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
