"""
Exercises for lesson 08: TinyLoRA and the export to PEFT.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 08
"""

import torch  # noqa: F401 (you will need it)


def tinylora_R(v, P):
    """
    TinyLoRA's r x r matrix R = Σ_i v_i P_i, for v of shape (u,) and P of shape (u, r, r).
    One line does it; so does a loop. Return a tensor of shape (r, r).
    """
    raise NotImplementedError("TODO")


def loraxs_as_lora(A, B, R, scaling):
    """
    A LoRA-XS layer adds ΔW = scaling · B R A, with A (r x in), B (out x r), R (r x r). Return the pair
    (A', B') of a plain LoRA layer with scale 1 that adds the same ΔW = B' A': A' is r x in, B' is out x r.
    """
    raise NotImplementedError("TODO")


def tinylora_fit_error(target, u, seed):
    """
    An experiment: which R can TinyLoRA reach?

    target is an r x r matrix. Draw TinyLoRA's projections as PEFT does: a torch.Generator seeded with
    `seed`, then P = torch.normal(0.0, 1 / sqrt(r), size=(u, r, r), generator=generator). Find the v
    that brings Σ_i v_i P_i closest to the target (a least-squares problem: torch.linalg.lstsq), and
    return the relative error ||Σ_i v_i P_i - target|| / ||target|| as a float.

    For r = 3, measure u = 1, 2, ..., 9. Before you run it: at which u does the error reach zero?
    """
    raise NotImplementedError("TODO")
