"""
One adapter configuration: what to add, where, and how big.

`AdapterConfig` holds every setting of an adapter (method, rank, alpha,
targets, dropout, seed, svd, and a method's own: TinyLoRA's u and
weight_tying, LoRA-XS's subspace). It is the one place settings are checked:
once, when it is made, the common settings here and each method's own by its
class (its `check_settings`). Then it travels whole: `add_adapters` builds from it, the
adapter file stores it, and `train.py` prints it in its results. Settings
left out take the method's own defaults, which its class gives
(default_rank, default_alpha, settings, each with its source):

    LoRA r = 8, alpha = 8; VeRA r = 256; LoRA-XS r = 8, alpha = r, subspace top; TinyLoRA r = 2, u = 64;
    LoRA-SB r = 8

All of them adapt every linear layer of every block, c_attn taken whole:
attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (PEFT's "all-linear"; QLoRA
found that adapting every layer is what matches full fine-tuning).

The LoRA-XS paper's code takes q, k and v separately, each with its own SVD
and R (EVERY_LINEAR_SPLIT_QKV below, and qkv.py). We measured both on the two
shipped tasks, 5 seeds each, on the small pretrained model: c_attn whole gave
the higher validation accuracy (README.md, "How the defaults were chosen"),
so it is the default; targets=EVERY_LINEAR_SPLIT_QKV gives the paper's layout.
"""

import math
from dataclasses import asdict, dataclass

from ..errors import LoraxsError, is_number, is_whole
from .registry import METHODS
from .svd import SVD_METHODS

# Every linear layer of a block. "attn.c_attn" is GPT-2's fused query-key-value layer (3C x C);
# "attn.c_attn.q", ".k" and ".v" name its three C x C thirds, each adapted on its own (see qkv.py).
EVERY_LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
EVERY_LINEAR_SPLIT_QKV = ("attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
DEFAULT_TARGETS = EVERY_LINEAR
MAX_SEED = 2**63 - 1  # torch.manual_seed's limit


@dataclass
class AdapterConfig:
    method: str
    rank: int | None = None  # None: the method's default (its class's default_rank)
    alpha: float | None = None  # None: the method's default; the update is scaled by alpha / rank
    targets: tuple[str, ...] | None = None  # layer names or patterns; None: DEFAULT_TARGETS
    dropout: float = 0.0  # on the adapter's input, during training only
    seed: int = 0  # LoRA's A, LoRA-XS's R (and random subspace), VeRA's pair, TinyLoRA's P (seed + the layer's index)
    svd: str = "gram"  # how LoRA-XS and TinyLoRA compute their SVD (see svd.py)
    u: int | None = None  # TinyLoRA only: trained numbers per group of layers; None: its default, 64
    weight_tying: float | None = None  # TinyLoRA only: 0 (default) each layer its own v, 1 one v for all
    subspace: str | None = None  # LoRA-XS only: the frozen directions, top (default), bottom or random

    def __post_init__(self):
        """Check every setting and fill in the method's defaults. After this, the config is complete."""
        if self.method not in METHODS:
            raise LoraxsError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        method = METHODS[self.method]
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise LoraxsError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not is_whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise LoraxsError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}")
        if self.svd not in SVD_METHODS:
            raise LoraxsError(f"unknown SVD method {self.svd!r}; choose one of {', '.join(SVD_METHODS)}")
        for name in method_settings() - method.settings.keys():  # another method's setting, given to this one
            if getattr(self, name) is not None:
                owners = ", ".join(m.display_name for m in METHODS.values() if name in m.settings)
                raise LoraxsError(f"{name} is a setting of {owners}; {method.display_name} has none, leave it out")
        if method.default_rank is None:  # none and full add nothing: rank, alpha and targets mean nothing
            self.rank = self.alpha = self.targets = None
            return
        self.rank = method.default_rank if self.rank is None else self.rank
        if not is_whole(self.rank) or self.rank < 1:
            raise LoraxsError(f"rank must be a positive whole number, got {self.rank!r}")
        if not method.has_alpha and self.alpha is not None:
            raise LoraxsError(
                f"{method.display_name} has no alpha: its update is not scaled by alpha / r; leave it out"
            )
        self.alpha = method.default_alpha(self.rank) if self.alpha is None else self.alpha
        if self.alpha is not None and not (is_number(self.alpha) and math.isfinite(self.alpha) and self.alpha > 0):
            raise LoraxsError(f"alpha must be a positive number, got {self.alpha!r}")
        if self.alpha is not None:
            self.alpha = float(self.alpha)
        method.check_settings(self)
        targets = DEFAULT_TARGETS if self.targets is None else self.targets
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoraxsError(f"targets must be a list of layer names such as {list(EVERY_LINEAR)}, got {targets!r}")
        self.targets = tuple(targets)

    @property
    def method_class(self):
        """The method's class in the registry: what it is, how it is built, its defaults."""
        return METHODS[self.method]

    def to_dict(self):
        """Plain JSON-ready values, for adapter files and results."""
        settings = asdict(self)
        settings["targets"] = list(self.targets) if self.targets else None
        return settings


def method_settings():
    """Every AdapterConfig field that belongs to one method or another (TinyLoRA's u and weight_tying, ...)."""
    return {name for method in METHODS.values() for name in method.settings}
