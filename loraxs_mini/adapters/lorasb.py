"""
LoRA-SB: LoRA-XS's shape, with the subspace taken from the data
(Ponkshe, Singhal et al., 2024, "Initialization using Update Approximation is
a Silver Bullet for Extremely Efficient Low-Rank Fine-Tuning", arXiv
2411.19557; code: github.com/RaghavSinghal10/lora-sb).

    ΔW_1  ≈  -η_1 sign(∇_W L)              full fine-tuning's first update, estimated on the first batch
    ΔW_1  ≈  U_r Σ_r V_rᵀ                   its truncated SVD
    B  =  U_r         out x r              frozen
    A  =  V_rᵀ        r x in               frozen
    R  =  Σ_r at the start, r x r          the only trained matrix

    y = W x + B R A x

LoRA-XS freezes the top singular directions of W and hopes the update lives
there. LoRA-SB asks the data: where does the first step of full fine-tuning
go? It freezes that subspace, and starts R so that B R A is the best rank-r
approximation of that step (Eckart-Young): the model starts where full
fine-tuning's first step, squeezed into rank r, would have taken it.

Why the sign: Adam's first step is exactly that. After one gradient g its
moments are m = (1 - β1) g and v = (1 - β2) g², bias-corrected to g and g², so
the step is -η g / (|g| + ε) ≈ -η sign(g), entry by entry.

Why no alpha: B and A are orthonormal (BᵀB = I, AAᵀ = I), so dL/dR = Bᵀ (dL/dW)
Aᵀ is the full fine-tuning gradient projected onto the subspace, at its own
scale; there is nothing to rescale (the paper's code sets alpha = r, s = 1).
Trainable numbers per layer: r², as in LoRA-XS.

Where this version departs from the paper's code, and why:
- The examples: the run's own first batch (16 of the 1,200 training examples
  of a toy task, 1.3%, drawn with the run's seed), as the first step of full
  fine-tuning would read them. The paper says about 0.1% of the data; its
  code takes 2 examples for GLUE (train_glue.py, num_samples=2) and 50 for
  math (train_arithmetic.py).
- The gradient of the batch's mean loss, where the code sums one gradient
  per example (utils/gradient_utils.py, estimate_and_process_grads_torch_2):
  the two differ by each example's weight (its number of graded tokens), and
  only the sign of the sum is kept.
- The rate: η_1 is the rate of this run's first step, its peak over the
  warm-up steps (recipe.py), which is what the code computes too (eff_lr =
  lr / (warmup_ratio x total steps)).
- The SVD: exact (torch.linalg.svd), signs fixed as svd.py does; the code uses
  the randomized torch.svd_lowrank.
- Not read: the code that sets B, A and R (utils/initialization_utils.py,
  find_and_initialize_grad) is not in the copy of the repository we could
  read. B = U_r, A = V_rᵀ, R = Σ_r follow the paper's description: orthonormal
  B and A from the truncated SVD of the first step, B R A its best rank-r
  approximation.

B, A and R's start depend on the training data, not on W alone, so they
cannot be rebuilt from the base model: adapter files always store B and A.
The cost is one forward and backward pass of the whole model on one batch,
before training (train.py reports it as the run's setup time).
"""

import torch
import torch.nn.functional as F

from .base import AdaptedLinear, new_parameter
from .loraxs import check_svd_rank, check_svd_ranks
from .svd import truncated_svd


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
            gradients = torch.autograd.grad(first_step.loss(), weights)  # only these W, not the whole model
    finally:
        for weight, was_frozen in zip(weights, frozen):
            weight.requires_grad_(not was_frozen)
    return {name: -first_step.learning_rate * gradient.sign() for name, gradient in zip(layers, gradients)}


class LoRASBLinear(AdaptedLinear):
    name, display_name = "lorasb", "LoRA-SB"
    default_rank = 8  # LoRA-XS's, to compare at equal counts (the paper's code: 24 for GLUE, 96 for math)
    needs_first_step = True
    stores_frozen = True
    learning_rates = {2: 1e-2, 4: 3e-2, 8: 3e-2, 16: 3e-3}  # docs/defaults.md

    @classmethod
    def check_layers(cls, layers, config):
        check_svd_ranks(layers, config.rank, cls.display_name)

    @classmethod
    def adapt(cls, layers, config, svd_cache=None, first_step=None):
        updates = first_update(layers, first_step) if first_step is not None else {}  # none: loaded from a file
        for name, layer in layers.items():
            yield name, cls(layer, config.rank, updates.get(name), config.dropout)

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
