"""Reference solutions for lesson 04. Try lessons/exercises/ex04_vera.py first!"""

import math

import torch


def shared_pair(rank, max_in, max_out, seed):
    generator = torch.Generator().manual_seed(seed)
    A = torch.empty(rank, max_in).uniform_(-math.sqrt(6 / max_in), math.sqrt(6 / max_in), generator=generator)
    B = torch.empty(max_out, rank).uniform_(-math.sqrt(6 / rank), math.sqrt(6 / rank), generator=generator)
    return A, B


def vera_delta_weight(A, B, d, b):
    return (b[:, None] * B * d[None, :]) @ A


def vera_fit_error(target, rank, seed=0):
    out_features, in_features = target.shape
    A, B = shared_pair(rank, in_features, out_features, seed)
    # Column i is vec(B[:, i] A[i, :]): ΔW = columns @ d can only move in these r fixed directions.
    columns = torch.stack([torch.outer(B[:, i], A[i]).flatten() for i in range(rank)], dim=1)  # (out·in, r)
    d = torch.linalg.lstsq(columns, target.flatten()[:, None]).solution  # (r, 1)
    return ((columns @ d).flatten() - target.flatten()).norm().item() / target.norm().item()
