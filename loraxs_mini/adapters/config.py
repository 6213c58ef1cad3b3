"""
One adapter configuration: what to add, where, and how big.

`AdapterConfig` holds every setting of an adapter (method, rank, alpha,
targets, dropout, seed, svd). It is checked once, when it is made, and then
travels whole: `add_adapters` builds from it, the adapter file stores it, and
`train.py` prints it in its results. Settings left out take the method's own
defaults:

    method   rank   alpha   source
    lora     8      8       PEFT's LoraConfig (r = 8, lora_alpha = 8)
    vera     256    -       PEFT's VeraConfig (r = 256)
    loraxs   8      = r     the LoRA-XS paper's code for its math and commonsense runs (lora_alpha = r)
    tinylora 2      -       PEFT's TinyLoraConfig (r = 2, u = 64, weight_tying = 0: each layer its own v)

and all four adapt every linear layer of every block, c_attn taken whole:
attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj (PEFT's "all-linear"; QLoRA
found that adapting every layer is what matches full fine-tuning).

The LoRA-XS paper's code takes q, k and v separately, each with its own SVD
and R (EVERY_LINEAR_SPLIT_QKV below, and qkv.py). We measured both on the two
shipped tasks, 5 seeds each, on the small pretrained model: c_attn whole gave
the higher validation accuracy (README.md, "How the defaults were chosen"),
so it is the default; targets=EVERY_LINEAR_SPLIT_QKV gives the paper's layout.

VeRA has no alpha: its trained vectors d and b set the update's scale. Nor
has TinyLoRA: PEFT adds B R A unscaled, and v sets the size of R.

Why alpha = r for LoRA-XS: it is what the paper's code does, and it keeps
s = alpha / r at 1, so Adam moves each entry of R by about the learning rate
per step at every rank. It does not make one learning rate fit every rank:
R has r² entries, so the step of the whole update grows with r, and on the
toy tasks the best rate fell from 1e-1 at r = 2 to 3e-3 at r = 16 and 32.
LoRA's fixed alpha (s = alpha / r shrinks as r grows) does not either:
there the best rate rose from 3e-4 at r <= 4 to 1e-3 at r >= 8. So train.py takes a rate chosen on validation for each
rank (recipe.LEARNING_RATES; docs/defaults.md).
"""

import math
from dataclasses import asdict, dataclass

from ..errors import LoraxsError
from .svd import SVD_METHODS

METHODS = ("none", "full", "lora", "vera", "loraxs", "tinylora")  # none: zero-shot; full: every weight trains
ADAPTER_METHODS = ("lora", "vera", "loraxs", "tinylora")

# Every linear layer of a block. "attn.c_attn" is GPT-2's fused query-key-value layer (3C x C);
# "attn.c_attn.q", ".k" and ".v" name its three C x C thirds, each adapted on its own (see qkv.py).
EVERY_LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
EVERY_LINEAR_SPLIT_QKV = ("attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")

DEFAULT_RANK = {"lora": 8, "vera": 256, "loraxs": 8, "tinylora": 2}
DEFAULT_U = 64  # TinyLoRA's trained numbers per group: PEFT's TinyLoraConfig
DEFAULT_TARGETS = EVERY_LINEAR
LORA_ALPHA = 8.0  # PEFT's default lora_alpha; LoRA's authors set alpha to the first r they tried and kept it


def default_alpha(method, rank):
    return {"lora": LORA_ALPHA, "vera": None, "loraxs": float(rank), "tinylora": None}[method]


@dataclass
class AdapterConfig:
    method: str
    rank: int | None = None  # None: the method's default (DEFAULT_RANK)
    alpha: float | None = None  # None: the method's default; the update is scaled by alpha / rank
    targets: tuple[str, ...] | None = None  # layer names or patterns; None: DEFAULT_TARGETS
    dropout: float = 0.0  # on the adapter's input, during training only
    seed: int = 0  # LoRA's A, LoRA-XS's R, VeRA's random pair, TinyLoRA's P (seed + the layer's index)
    svd: str = "gram"  # how LoRA-XS and TinyLoRA compute their SVD (see svd.py)
    u: int | None = None  # TinyLoRA only: trained numbers per group of layers; None: DEFAULT_U
    weight_tying: float | None = None  # TinyLoRA only: 0 (default) each layer its own v, 1 one v for all

    def __post_init__(self):
        """Check every setting and fill in the method's defaults. After this, the config is complete."""
        if self.method not in METHODS:
            raise LoraxsError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise LoraxsError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not is_whole(self.seed):
            raise LoraxsError(f"seed must be a whole number, got {self.seed!r}")
        if self.svd not in SVD_METHODS:
            raise LoraxsError(f"unknown SVD method {self.svd!r}; choose one of {', '.join(SVD_METHODS)}")
        if self.method != "tinylora" and (self.u is not None or self.weight_tying is not None):
            raise LoraxsError(f"u and weight_tying are TinyLoRA's settings; {self.method} has none, leave them out")
        if self.method not in ADAPTER_METHODS:  # none and full add nothing: rank, alpha and targets mean nothing
            self.rank = self.alpha = self.targets = None
            return
        self.rank = DEFAULT_RANK[self.method] if self.rank is None else self.rank
        if not is_whole(self.rank) or self.rank < 1:
            raise LoraxsError(f"rank must be a positive whole number, got {self.rank!r}")
        if self.method == "vera" and self.alpha is not None:
            raise LoraxsError("VeRA has no alpha: its trained vectors d and b set the scale; leave alpha out")
        if self.method == "tinylora":
            if self.alpha is not None:
                raise LoraxsError("TinyLoRA has no alpha: its update B R A is not scaled; leave alpha out")
            self.u = DEFAULT_U if self.u is None else self.u
            if not is_whole(self.u) or self.u < 1:
                raise LoraxsError(f"u must be a positive whole number, got {self.u!r}")
            self.weight_tying = 0.0 if self.weight_tying is None else self.weight_tying
            if not is_number(self.weight_tying) or not 0 <= self.weight_tying <= 1:
                raise LoraxsError(f"weight_tying must be a number in [0, 1], got {self.weight_tying!r}")
            self.weight_tying = float(self.weight_tying)
        self.alpha = default_alpha(self.method, self.rank) if self.alpha is None else self.alpha
        if self.alpha is not None and not (is_number(self.alpha) and math.isfinite(self.alpha) and self.alpha > 0):
            raise LoraxsError(f"alpha must be a positive number, got {self.alpha!r}")
        if self.alpha is not None:
            self.alpha = float(self.alpha)
        targets = DEFAULT_TARGETS if self.targets is None else self.targets
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoraxsError(f"targets must be a list of layer names such as {list(EVERY_LINEAR)}, got {targets!r}")
        self.targets = tuple(targets)

    def to_dict(self):
        """Plain JSON-ready values, for adapter files and results."""
        settings = asdict(self)
        settings["targets"] = list(self.targets) if self.targets else None
        return settings


def is_whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
