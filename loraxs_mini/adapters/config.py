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
the higher validation accuracy (docs/defaults.md#at-the-default-ranks-lora-xss-layout-and-the-first-learning-rates),
so it is the default; targets=EVERY_LINEAR_SPLIT_QKV gives the paper's layout.
"""

import math

from ..errors import LoraxsError, is_number, is_whole
from .registry import METHODS
from .svd import SVD_METHODS

# Every linear layer of a block. "attn.c_attn" is GPT-2's fused query-key-value layer (3C x C);
# "attn.c_attn.q", ".k" and ".v" name its three C x C thirds, each adapted on its own (see qkv.py).
EVERY_LINEAR = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
EVERY_LINEAR_SPLIT_QKV = ("attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
DEFAULT_TARGETS = EVERY_LINEAR
MAX_SEED = 2**63 - 1  # torch.manual_seed's limit


class AdapterConfig:
    """
    AdapterConfig(method, rank=None, alpha=None, targets=None, dropout=0.0, seed=0, svd="gram", **settings):
    every setting a method shares, and as keywords its own (LoRA-XS's subspace, TinyLoRA's u and weight_tying).
    Checked and completed when it is made; None takes the method's default.
    """

    COMMON = ("method", "rank", "alpha", "targets", "dropout", "seed", "svd")

    def __init__(self, method, rank=None, alpha=None, targets=None, dropout=0.0, seed=0, svd="gram", **settings):
        self.method, self.rank, self.alpha, self.targets = method, rank, alpha, targets
        self.dropout, self.seed, self.svd = dropout, seed, svd  # seed: every random start, and the data order
        self.settings = {name: value for name, value in settings.items() if value is not None}
        self._check()

    def _check(self):
        """Check every setting and fill in the method's defaults. After this, the config is complete."""
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise LoraxsError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        method = METHODS[self.method]
        if not is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise LoraxsError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not is_whole(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise LoraxsError(f"seed must be a whole number from 0 to 2**63 - 1, got {self.seed!r}")
        if self.svd not in SVD_METHODS:
            raise LoraxsError(f"unknown SVD method {self.svd!r}; choose one of {', '.join(SVD_METHODS)}")
        for name in self.settings.keys() - method.settings.keys():  # another method's setting, given to this one
            owners = ", ".join(m.display_name for m in method_settings().get(name, [])) or "no method"
            raise LoraxsError(f"{name} is a setting of {owners}; {method.display_name} has none, leave it out")
        for name, setting in method.settings.items():
            value = self.settings.setdefault(name, setting.default)
            if setting.choices and value not in setting.choices:
                raise LoraxsError(f"unknown {name} {value!r}; choose one of {', '.join(map(str, setting.choices))}")
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
        self.alpha = method.default_alpha(self.rank) if self.alpha is None and method.has_alpha else self.alpha
        if self.alpha is not None and not (is_number(self.alpha) and math.isfinite(self.alpha) and self.alpha > 0):
            raise LoraxsError(f"alpha must be a positive number, got {self.alpha!r}")
        if self.alpha is not None:
            self.alpha = float(self.alpha)
        method.check_settings(self)
        targets = DEFAULT_TARGETS if self.targets is None else self.targets
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) and t for t in targets):
            raise LoraxsError(f"targets must be a list of layer names such as {list(EVERY_LINEAR)}, got {targets!r}")
        self.targets = tuple(targets)

    def __getattr__(self, name):
        """config.subspace, config.u: a method's own setting reads like any other."""
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} of {self.__dict__.get('method')!r} has no setting {name!r}")

    @property
    def method_class(self):
        """The method's class in the registry: what it is, how it is built, its defaults."""
        return METHODS[self.method]

    def to_dict(self):
        """Plain JSON-ready values, for adapter files and results: the shared settings, then the method's own."""
        common = {name: getattr(self, name) for name in self.COMMON}
        return {**common, "targets": list(self.targets) if self.targets else None, **self.settings}

    def __eq__(self, other):
        return isinstance(other, AdapterConfig) and self.to_dict() == other.to_dict()

    def __repr__(self):
        values = {**self.to_dict(), "targets": self.targets}
        return f"AdapterConfig({', '.join(f'{name}={value!r}' for name, value in values.items())})"


def method_settings():
    """Every method's own setting, from the registry: name -> the methods that have it."""
    owners = {}
    for method in METHODS.values():
        for name in method.settings:
            owners.setdefault(name, []).append(method)
    return owners
