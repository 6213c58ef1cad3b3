"""
LoRA-SB: LoRA-XS's shape, with the subspace taken from the data (Ponkshe, Singhal et al., 2024, "Initialization
using Update Approximation is a Silver Bullet for Extremely Efficient Low-Rank Fine-Tuning", arXiv 2411.19557).

    ΔW_1  ≈  -η_1 sign(∇_W L)              full fine-tuning's first update, estimated on the first batch
    ΔW_1  ≈  U_r Σ_r V_rᵀ                   its truncated SVD
    B  =  U_r         out x r              frozen
    A  =  V_rᵀ        r x in               frozen
    R  =  Σ_r at the start, r x r          the only trained matrix

    y = W x + B R A x

LoRA-XS freezes the top singular directions of W and hopes the update lives there. LoRA-SB asks the data: where
does the first step of full fine-tuning go? It freezes that subspace and starts R so that B R A is the best
rank-r approximation of that step (Eckart-Young). The sign is Adam's first step: after one gradient g, the
bias-corrected moments are g and g², so the step is -η g / (|g| + ε) ≈ -η sign(g), entry by entry. There is no
alpha: B and A are orthonormal, so dL/dR = Bᵀ (dL/dW) Aᵀ is full fine-tuning's gradient projected onto the
subspace, at its own scale. Trainable numbers per layer: r², as in LoRA-XS.

B, A and R's start depend on the training data, not on W alone, so adapter files always store B and A. Where this
version departs from the paper's code, and why: docs/methods.md.
"""

import torch
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, new_parameter
from .svd import check_svd_rank, check_svd_ranks, truncated_svd


class LoRASBLinear(AdaptedLinear):
    def __init__(self, base, rank, update=None, dropout=0.0):
        """`update`: the estimated first update ΔW_1 (out x in); None: zeros, for a file's tensors to fill."""
        check_svd_rank(base, rank, self.display_name)
        super().__init__(base, rank, dropout)
        if update is None:
            out, in_ = base.out_features, base.in_features
            U_r, S_r, Vh_r = torch.zeros(out, rank), torch.zeros(rank), torch.zeros(rank, in_)
        else:
            U_r, S_r, Vh_r = truncated_svd(update, rank, "svd")  # the best rank-r approximation of ΔW_1
        like = dict(device=base.weight.device, dtype=torch.float32)
        self.register_buffer("B", U_r.to(**like).contiguous(), persistent=False)  # out x r: U_r, orthonormal columns
        self.register_buffer("A", Vh_r.to(**like).contiguous(), persistent=False)  # r x in: V_rᵀ, orthonormal rows
        self.R = new_parameter(torch.diag(S_r.cpu()), like=base.weight)  # r x r: Σ_r, so B R A = U_r Σ_r V_rᵀ

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out)
        return F.linear(F.linear(F.linear(x, self.A), self.R), self.B)

    def delta_weight(self):
        return self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)

    def lora_factors(self):
        with torch.no_grad():  # PEFT has no LoRA-SB: it runs as a LoRA of rank r
            return self.A, self.B @ self.R  # A' = A, B' = B R

    # What the registry needs (base.py's table).
    name, display_name = "lorasb", "LoRA-SB"
    default_rank = 8  # LoRA-XS's, to compare at equal counts (the paper's code: 24 for GLUE, 96 for math)
    needs_first_step = True
    stores_frozen = True
    learning_rates = {2: 1e-2, 4: 3e-2, 8: 3e-2, 16: 3e-3}  # docs/defaults.md

    @classmethod
    def check_layers(cls, layers, config):
        check_svd_ranks(layers, config.rank, cls.display_name)

    @classmethod
    def check_frozen(cls, frozen):
        """B and A orthonormal (BᵀB = I, A Aᵀ = I, within 1e-5 in float32): what makes alpha unnecessary."""
        for name, gram in (("B", frozen["B"].T @ frozen["B"]), ("A", frozen["A"] @ frozen["A"].T)):
            error = (gram.float() - torch.eye(len(gram))).abs().max().item()
            if not error <= 1e-5:
                return f"its {name} is not orthonormal (off by {error:.1e}), as LoRA-SB's B and A always are"
        return None

    @classmethod
    def adapt(cls, layers, config, build):
        """One backward pass gives every layer's first update; no first step: zeros, for a file's B and A."""
        updates = first_update(layers, build.first_step) if build.first_step is not None else {}
        for name, layer in layers.items():
            yield name, cls(layer, config.rank, updates.get(name), config.dropout)


def first_update(layers, first_step):
    """
    -η_1 sign(∇_W L) for every target layer (name -> nn.Linear): full fine-tuning's first step under Adam, from
    one forward and backward pass on the first batch. Leaves every weight and its requires_grad as it was.
    """
    weights = [layer.weight for layer in layers.values()]
    frozen = [not weight.requires_grad for weight in weights]
    for weight in weights:
        weight.requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = first_step.loss()
            if not torch.isfinite(loss):
                raise LoraxsError(f"the first step's loss is {loss.item()}: LoRA-SB cannot start from it")
            gradients = torch.autograd.grad(loss, weights)  # only these W, not the whole model
    finally:
        for weight, was_frozen in zip(weights, frozen):
            weight.requires_grad_(not was_frozen)
    still = [name for name, gradient in zip(layers, gradients) if not gradient.any()]
    if still:  # sign(0) = 0: no update, no subspace to take, and R would start at 0
        raise LoraxsError(
            f"full fine-tuning's first step does not move {still[0]} ({len(still)} of {len(layers)} "
            "target layers): its gradient on this batch is zero, so LoRA-SB has no subspace to take "
            "there. Give a training batch that reaches every target layer"
        )
    return {name: -first_step.learning_rate * gradient.sign() for name, gradient in zip(layers, gradients)}
