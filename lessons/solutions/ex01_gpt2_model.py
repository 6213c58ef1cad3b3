"""Reference solutions for lesson 01. Try lessons/exercises/ex01_gpt2_model.py first!"""

import math

import torch


def causal_attention(q, k, v):
    T, D = q.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(D)  # (B, H, T, T)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True above the diagonal
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def position_sensitivity(model, idx, position):
    changed = idx.clone()
    changed[:, position] = (changed[:, position] + 1) % model.config.vocab_size
    with torch.no_grad():
        before, after = model(idx)[0], model(changed)[0]  # (B, T, V) each
    return (after - before).abs().amax(dim=(0, 2))  # (T,): zero before `position`, causal attention
