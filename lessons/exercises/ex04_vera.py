"""
Exercises for lesson 04: VeRA.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 04
"""

import math  # noqa: F401 (you will need these)

import torch  # noqa: F401


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


def vera_fit_error(target, rank, seed=0):
    """
    An experiment: how much can VeRA express at rank r?

    Take VeRA's frozen pair for `target`'s shape (out x in): A, B = shared_pair(rank, in, out, seed)
    from above. Keep b = 1: then ΔW = B diag(d) A = Σ_i d_i B[:, i] A[i, :] is linear in d, so the
    best d is a least-squares problem (torch.linalg.lstsq). Return the relative error
    ||ΔW - target|| / ||target|| of the best d, as a float.

    Measure it at r = 8 and r = 256 for a 24 x 24 target. Why does VeRA run at ranks where LoRA
    would be enormous?
    """
    raise NotImplementedError("TODO")
