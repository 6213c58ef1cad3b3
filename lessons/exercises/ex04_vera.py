"""
Exercises for lesson 04: VeRA.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 04
"""

import math  # noqa: F401 (you will need these)

import torch  # noqa: F401


def vera_parameter_count(out_features, rank):
    """How many numbers does VeRA train for one layer with `out_features` outputs at rank r?"""
    raise NotImplementedError("TODO")


def shared_pair(rank, max_in, max_out, seed):
    """
    VeRA's frozen random pair, drawn exactly as loraxs_mini (and Hugging Face PEFT) draw it:
    a torch.Generator seeded with `seed`; first A (rank x max_in), then B (max_out x rank),
    each uniform in ±sqrt(6 / fan_in), where fan_in is the size of the matrix's second dimension.
    Hint: torch.empty(shape).uniform_(low, high, generator=generator). Return (A, B).
    """
    raise NotImplementedError("TODO")


def vera_delta_weight(A, B, d, b):
    """
    ΔW = diag(b) B diag(d) A, for A (r x in), B (out x r), d (r), b (out). Use broadcasting
    instead of building the diagonal matrices.
    """
    raise NotImplementedError("TODO")
