"""
LoRA-XS: Low-Rank Adaptation with eXtremely Small number of parameters
(Bałazy et al., 2024).

    W  ≈  U_r Σ_r V_rᵀ                    truncated SVD of the pretrained weight
    B  =  U_r           out x r          frozen
    A  =  Σ_r V_rᵀ      r x in           frozen
    R                   r x r            the only trained matrix

    y = W x + (alpha / r) B R A x

The idea, and the paper's hypothesis: the top-r singular directions of a
pretrained matrix are the ones it uses most, so they are where an update
should act. (How much "most" is, measured on block 0's c_attn of the small
pretrained GPT-2: the top 8 of 256 directions hold 20% of its squared norm,
the top 32 hold 51%; random weights: 7% and 26%. Lesson 05 prints it for
any model.
Whether the top subspace beats another one is an experiment, not a given.)
LoRA-XS keeps these directions fixed and learns only how to mix them, an
r x r matrix R. Every update B R A therefore has its columns in
span(U_r) and its rows in span(V_r). Trainable parameters per layer: r², for
any width: 64 at r = 8 whether the layer is 768 or 8192 wide. At equal rank
that is 100-250x fewer than LoRA's r (in + out) on 7B models: 183x on
Mistral-7B and 249x on Gemma-7B at r = 64, every linear layer adapted. (At
unequal ranks, as in many of the paper's tables, the ratio is whatever the
two ranks make it.)

The start: R is tiny noise (std 1e-5, as in the paper's code), so ΔW ≈ 0 and
the adapted model starts almost exactly as the pretrained one. What B and A
bring is not a head start but a direction: with R = I and alpha = r, B R A
would be U_r Σ_r V_rᵀ, the best rank-r approximation of W (Eckart-Young), so
every update is confined to the subspace where W itself acts most strongly.
Unlike LoRA's B = 0, R needs no non-zero partner to learn: its gradient,
dL/dR = s Bᵀ (dL/dy) (A x)ᵀ, does not involve R itself.

Why alpha = r: it is what the paper's code does for its math runs
(main_math_tuning.py: lora_alpha = lora_r); its commonsense script takes
alpha as an argument (main_commonsense_tuning.py, default 16) and its GLUE
scripts keep alpha = 16 for r from 4 to 25 (main_glue.py's default, which
scripts/run_glue.py does not change). alpha = r keeps
s = alpha / r at 1, so Adam moves each entry of R by about the learning rate
per step at every rank. It does not make one learning rate fit every rank:
R has r² entries, so the step of the whole update grows with r, and on the
toy tasks the best rate fell from 1e-1 at r = 2 to 3e-3 at r = 16 and 32.
LoRA's fixed alpha (s = alpha / r shrinks as r grows) does not either:
there the best rate rose from 3e-4 at r <= 4 to 1e-3 at r >= 8. So each
rank has its own rate, chosen on validation (learning_rates below;
docs/defaults.md).

Which subspace? (`subspace`, lesson 09.) The paper freezes the top r
directions; two other choices test whether that is what makes it work:

    top      U_r, V_r of the r largest singular values           (the paper; the default)
    bottom   the r smallest ones                                   (MiLoRA's directions, frozen here)
    random   a seeded random orthonormal pair, U' (out x r), V' (in x r)

(MiLoRA, Wang et al., arXiv 2406.09044, its abstract: a LoRA whose A and B
start from W's minor singular components and then train; here they stay
frozen and only R trains.)

Only the directions differ: every choice keeps the top Σ_r as its scale,
B = U', A = Σ_r V'ᵀ. With the bottom singular values instead, A would be
smaller (on the small pretrained model at r = 8, the mean of the top 8 is 4
to 215 times the bottom 8's, 8 times in the median matrix) and every step on
R would move ΔW that much less: the comparison would measure a step size,
not a subspace. With Σ_r kept, the same R gives an update of the same size
in each subspace. We expected one learning rate to serve all three; on the
toy tasks the bottom and random subspaces wanted about 3x larger rates from
r = 8 on, so each has its own (subspace_learning_rates; docs/defaults.md).
The random pair is drawn from seed + the layer's index among the targets, as
TinyLoRA's P are.

When is that subspace well defined? Only when σ_r > σ_{r+1}. If the two are
nearly equal, any mix of u_r and u_{r+1} is an equally good r-th direction,
and rounding decides which one the SVD returns: another machine or library
version may rebuild a different B from the same W. The layer records
gap = σ_r / σ_{r+1}, and adding the adapters warns when it is close to 1.
"""

import math
import warnings

import torch
import torch.nn.functional as F

from ..errors import LoraxsError
from .base import AdaptedLinear, new_parameter
from .svd import fixed_signs, truncated_svd

# Below this σ_r / σ_{r+1}, the top-r subspace hangs on rounding. On the small pretrained model, the Gram route and the
# full float32 SVD disagreed on U_r by a sine of 1.4e-3 at a gap of 1.0003, by at most 4e-5 at every gap above 1.005:
# the disagreement grows roughly as 1 / (gap - 1).
NARROW_GAP = 1.001


def check_svd_rank(layer, rank, method, name=None):
    """The SVD of an out x in matrix has min(in, out) singular values: r can be at most that."""
    largest = min(layer.in_features, layer.out_features)
    if rank > largest:
        raise LoraxsError(
            (f"{name}: " if name else "") + f"{method} rank {rank} is too large for a {layer.out_features} x "
            f"{layer.in_features} layer: its SVD has only {largest} singular values; choose rank <= {largest}"
        )


def check_svd_ranks(layers, rank, method):
    """check_svd_rank for every target layer (name -> nn.Linear): what LoRA-XS, TinyLoRA and LoRA-SB check."""
    for name, layer in layers.items():
        check_svd_rank(layer, rank, method, name)


def warn_about_narrow_gaps(adapters):
    """One warning naming the layers (name -> adapter) whose σ_r / σ_{r+1} is so close to 1 that it is ill-defined."""
    narrow = [name for name, adapter in adapters.items() if adapter.gap < NARROW_GAP]
    if narrow:
        warnings.warn(  # said once per message: Python shows a repeated warning only the first time
            f"in {len(narrow)} of {len(adapters)} layers (first: {narrow[0]}) the r-th and (r+1)-th singular values "
            f"are nearly equal (σ_r / σ_(r+1) < {NARROW_GAP}), so rounding decides which of the two directions is "
            "frozen. Training is not affected. Loading the adapter file on another machine may rebuild the other "
            "direction, and loading then refuses the file; to make it load anywhere, store the frozen matrices too "
            "(train.py --save-frozen, save_adapters(..., frozen=True)). Otherwise there is nothing to do.",
            stacklevel=5,  # past this function, adapt(), tqdm and add_adapters: the line that added the adapters
        )


def loraxs_svd(W, rank, method="gram"):
    """
    The top triplets LoRA-XS needs at `rank`: one more than r when the matrix
    has it, to see the gap after σ_r. Any larger number of top triplets works
    too: B and A at rank r are their first r columns and rows.
    """
    return truncated_svd(W, min(rank + 1, *W.shape), method)  # float32 (see svd.py)


class SVDCache:
    """
    Each matrix's top singular triplets, computed once for the largest rank a
    sweep needs and sliced for the smaller ones: the SVD of W depends on
    neither the seed nor the rank. Keyed by layer name, so it serves copies of
    one base model only. The randomized SVD is not cached: what it finds
    depends on how many triplets it is asked for.
    """

    def __init__(self, max_rank):
        self.max_rank, self.triplets = max_rank, {}

    def get(self, name, W, method):
        if method == "randomized":
            return None
        if (name, method) not in self.triplets:
            self.triplets[name, method] = loraxs_svd(W, self.max_rank, method)
        return self.triplets[name, method]


SUBSPACES = ("top", "bottom", "random")


def top_triplets(base, rank, svd="gram", triplets=None):
    """
    (U_r, Σ_r, V_rᵀ, gap) of the layer's weight, gap = σ_r / σ_{r+1}: what LoRA-XS (and TinyLoRA) build B and A
    from. `triplets`: the SVD of base.weight already computed at rank r or more (SVDCache), or None to compute it.
    """
    U, S, Vh = loraxs_svd(base.weight, rank, svd) if triplets is None else triplets
    gap = (S[rank - 1] / S[rank]).item() if len(S) > rank and not S.is_meta else math.inf
    return U[:, :rank], S[:rank], Vh[:rank], gap


def frozen_directions(base, rank, subspace, seed, top):
    """
    (U', V'ᵀ, gap): the r directions LoRA-XS freezes, out x r and r x in. `top`: the layer's (U_r, V_rᵀ, gap). gap
    is σ_r / σ_(r+1) at the edge of the chosen singular directions (random: none, infinite).
    """
    U_r, Vh_r, gap = top
    if subspace == "top":
        return U_r, Vh_r, gap
    W = base.weight.detach().float()
    if subspace == "bottom":  # every triplet (the Gram route would lose the small ones), then the last r
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        signs = fixed_signs(U[:, -rank:])
        edge = (S[-rank - 1] / S[-rank]).item() if len(S) > rank else math.inf  # σ_(n-r) / σ_(n-r+1)
        return U[:, -rank:] * signs, Vh[-rank:] * signs[:, None], edge
    generator = torch.Generator().manual_seed(seed)  # random: orthonormal columns from QR of Gaussian matrices
    U = torch.linalg.qr(torch.randn(W.shape[0], rank, generator=generator)).Q  # out x r
    V = torch.linalg.qr(torch.randn(W.shape[1], rank, generator=generator)).Q  # in x r
    return U.to(W.device), V.T.to(W.device), math.inf


class LoRAXSLinear(AdaptedLinear):
    name, display_name = "loraxs", "LoRA-XS"
    default_rank = 8
    has_alpha = True
    uses_svd = True
    learning_rates = {2: 1e-1, 4: 3e-2, 8: 1e-2, 16: 3e-3, 32: 3e-3}  # docs/defaults.md
    settings = {"subspace": "top"}  # the directions B and A span: top (the paper), bottom or random
    subspace_learning_rates = {  # the others, at the same scale, wanted about 3x larger steps from r = 8 on
        "bottom": {2: 1e-1, 4: 3e-2, 8: 3e-2, 16: 1e-2},
        "random": {2: 3e-1, 4: 3e-1, 8: 3e-2, 16: 1e-2},
    }  # docs/defaults.md

    @classmethod
    def check_settings(cls, config):
        config.subspace = cls.settings["subspace"] if config.subspace is None else config.subspace
        if config.subspace not in SUBSPACES:
            raise LoraxsError(f"unknown subspace {config.subspace!r}; choose one of {', '.join(SUBSPACES)}")

    @classmethod
    def run_label(cls, config):
        return cls.name if config.subspace == cls.settings["subspace"] else f"{cls.name}-{config.subspace}"

    @classmethod
    def learning_rates_for(cls, config=None):
        subspace = cls.settings["subspace"] if config is None else config.subspace
        return cls.subspace_learning_rates.get(subspace, cls.learning_rates)

    @classmethod
    def default_alpha(cls, rank):
        return float(rank)  # the paper's math runs (lora_alpha = r; its GLUE runs: 16): s = 1 at every r

    @classmethod
    def check_layers(cls, layers, config):
        check_svd_ranks(layers, config.rank, cls.display_name)

    @classmethod
    def adapt(cls, layers, config, svd_cache=None, first_step=None):
        generator = torch.Generator().manual_seed(config.seed)  # every layer's R in turn, from one seeded stream
        adapters = {}
        for index, (name, layer) in enumerate(layers.items()):
            triplets = svd_cache.get(name, layer.weight, config.svd) if svd_cache is not None else None
            adapters[name] = cls(
                layer, config.rank, config.alpha, config.dropout, generator, config.svd, triplets,
                config.subspace, config.seed + index,
            )  # fmt: skip
            yield name, adapters[name]
        warn_about_narrow_gaps(adapters)

    def __init__(
        self, base, rank, alpha, dropout=0.0, generator=None, svd="gram", triplets=None, subspace="top", seed=0
    ):
        """`seed`: of the random subspace, the config's seed plus the layer's index among the targets."""
        check_svd_rank(base, rank, self.display_name)
        super().__init__(base, rank, dropout)
        self.scaling = alpha / rank
        U_r, S_r, Vh_r, gap = top_triplets(base, rank, svd, triplets)
        U, Vh, self.gap = frozen_directions(base, rank, subspace, seed, (U_r, Vh_r, gap))  # top: U_r, V_rᵀ as they are
        # Frozen: buffers, not parameters. Rebuilt from W when an adapter file is loaded, unless stored in it.
        self.register_buffer("B", U.contiguous(), persistent=False)  # out x r: U_r (or the bottom or random U')
        self.register_buffer("A", S_r[:, None] * Vh, persistent=False)  # r x in: Σ_r V_rᵀ (top Σ_r in every subspace)
        R = torch.randn(rank, rank, generator=generator) * 1e-5
        self.R = new_parameter(R, like=base.weight)  # r x r, the only trained tensor

    def update(self, x):
        # x (..., in) -> A x (..., r) -> R A x (..., r) -> B R A x (..., out); scaled while it is r wide
        return F.linear(F.linear(F.linear(x, self.A), self.R) * self.scaling, self.B)

    def delta_weight(self):
        return self.scaling * self.B @ self.R @ self.A  # (out x r)(r x r)(r x in)

    def lora_factors(self):
        with torch.no_grad():  # PEFT has no LoRA-XS: it runs as a LoRA of rank r
            return self.A, self.scaling * self.B @ self.R  # A' = A, B' = (alpha / r) B R
