"""
Exercises for lesson 05: the SVD and LoRA-XS.

Complete each function where it says TODO, then check your work:

    python -m loraxs_mini.check 05
"""

import torch  # noqa: F401 (you will need it)


def best_rank_r(W, r):
    """The best rank-r approximation of W (out x in), in the sense of the Frobenius norm."""
    raise NotImplementedError("TODO")


def loraxs_init(W, r):
    """LoRA-XS's frozen pair for the weight W: return (B, A) with B = U_r (out x r) and A = Σ_r V_rᵀ (r x in)."""
    raise NotImplementedError("TODO")


def loraxs_parameter_count(n_layer, adapted_per_block, rank):
    """How many numbers does LoRA-XS train in a model of n_layer blocks, adapting that many matrices per block?"""
    raise NotImplementedError("TODO")
