"""
A compact GPT-2, written to be read.

What this file teaches
----------------------
GPT-2 (Radford et al., 2019) turns a sequence of T token ids into T
probability distributions over the next token. It is

    x_0 = wte[idx] + wpe[0..T-1]                      token + position embeddings
    x_l = x_{l-1} + Attention(LN(x_{l-1}))            for each of the L blocks ...
    x_l = x_l     + MLP(LN(x_l))                      ... pre-LayerNorm residual
    logits = LN(x_L) @ wte^T                          head tied to the embedding

Shapes used in the comments: B batch, T tokens, C width (n_embd),
H heads, D = C / H the width of one head, V vocabulary size.

Every learned matrix is a plain `nn.Linear` (weight stored out x in) and the
modules keep Hugging Face's names (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`,
`mlp.c_proj`), so the adapters in `loraxs_mini/adapters/` can wrap them
without touching this file, and a checkpoint maps onto it name by name
(see `pretrained.py`).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import LoraxsError

IGNORE_INDEX = -100  # targets equal to this are not scored (PyTorch's and Hugging Face's convention)


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2's byte-pair vocabulary
    block_size: int = 1024  # longest sequence: rows of the position table (n_positions)
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0  # pretraining used 0.1; fine-tuning small adapters usually uses none
    layer_norm_epsilon: float = 1e-5
    name: str = "custom"  # where the shape came from, kept in saved adapters

    def __post_init__(self):
        # Checked here, where every configuration passes (presets, config.json files, your own), so that a wrong
        # value is one clear message now instead of a crash, a NaN or an exhausted memory later.
        for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, field)
            if type(value) is not int or value < 1:
                raise LoraxsError(f"{field} must be a positive whole number, got {value!r}")
        if self.n_embd % self.n_head != 0:
            raise LoraxsError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        epsilon, dropout = self.layer_norm_epsilon, self.dropout
        if type(epsilon) not in (int, float) or not 0 < epsilon < 1:
            raise LoraxsError(f"layer_norm_epsilon must be a small positive number (GPT-2: 1e-5), got {epsilon!r}")
        if type(dropout) not in (int, float) or not 0 <= dropout < 1:
            raise LoraxsError(f"dropout must be a probability in [0, 1), got {dropout!r}")
        # Weights per block: 12 C² (attention 4 C², MLP 8 C²); embeddings: (vocab + positions) x C.
        parameters = self.n_layer * 12 * self.n_embd**2 + (self.vocab_size + self.block_size) * self.n_embd
        if parameters > MAX_PARAMETERS:
            raise LoraxsError(
                f"this configuration describes a model of {parameters:,} parameters, more than the "
                f"{MAX_PARAMETERS:,} this project handles (GPT-2 XL has 1.5 billion); check its sizes"
            )

    @classmethod
    def from_name(cls, name, **overrides):
        """The configuration of a preset: one of the names in PRESETS."""
        if name not in PRESETS:
            raise LoraxsError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
        return cls(name=name, **{**PRESETS[name], **overrides})


MAX_PARAMETERS = 20_000_000_000  # 13x GPT-2 XL: beyond it a config.json is wrong, not big

# The four public checkpoints, and small shapes for tests and lessons (random weights only).
PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=128),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
}
PRETRAINED = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


class CausalSelfAttention(nn.Module):
    """softmax(Q K^T / sqrt(D) + causal mask) V, for H heads at once."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # x -> [Q | K | V], one fused matrix
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)  # heads -> residual stream
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, H, T, D): each head attends in its own D-dimensional subspace
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # is_causal masks the future: token t only sees tokens 0..t. PyTorch picks the fastest kernel.
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """c_proj(GELU(c_fc(x))): widen to 4C, apply the non-linearity, come back to C."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        # GPT-2 was trained with the tanh approximation of GELU ("gelu_new" in Hugging Face)
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """One Transformer block, pre-LayerNorm: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),  # token embedding, V x C
                wpe=nn.Embedding(config.block_size, config.n_embd),  # position embedding, T_max x C
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the head that scores the next token is the token embedding itself (V x C).
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2 paper: scale the residual projections by 1/sqrt(2L), as 2L of them add into the stream.
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        # Random initialisation as in GPT-2; a pretrained checkpoint overwrites all of it.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self):
        """Every parameter once: `parameters()` already skips the tied head."""
        return sum(p.numel() for p in self.parameters())

    def hidden_states(self, idx):
        """(B, T) token ids -> (B, T, C) final hidden states, before the output head."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise LoraxsError(
                f"a sequence of {T} tokens is longer than this model's context of "
                f"{self.config.block_size} tokens; shorten the input"
            )
        positions = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.transformer.ln_f(x)

    def forward(self, idx, targets=None):
        """
        Without targets: returns (logits, None), logits (B, T, V) for every position.

        With targets (B, T), the next token at each position or IGNORE_INDEX:
        returns (logits, loss) where loss is the mean cross-entropy over the
        scored positions and logits holds only those rows, (N_scored, V).
        The head is GPT-2's largest matrix (V x C = 50257 x 768), and in
        fine-tuning only the answer tokens are scored, so skipping the rest
        saves most of its cost.
        """
        x = self.hidden_states(idx)
        if targets is None:
            return self.lm_head(x), None
        scored = targets != IGNORE_INDEX
        logits = self.lm_head(x[scored])  # (N_scored, V)
        loss = F.cross_entropy(logits.float(), targets[scored])
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=0.0, top_k=None, generator=None, stop_token=None):
        """
        Append up to `max_new_tokens` tokens to idx (B, T), one at a time.

        temperature 0 is greedy decoding (always the most likely token);
        otherwise sample from softmax(logits / temperature), optionally only
        among the top_k most likely tokens. With a stop_token, generation ends
        early once every row has produced it. No key-value cache: each step
        re-reads the whole (cropped) context, which is simple and fast enough
        for short answers.
        """
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self.lm_head(self.hidden_states(context)[:, -1])  # (B, V), only the last position
            if temperature == 0.0:
                next_token = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits.float() / temperature
                if top_k is not None:
                    kth_largest = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth_largest, float("-inf"))
                probabilities = F.softmax(logits, dim=-1)
                next_token = torch.multinomial(probabilities, num_samples=1, generator=generator)
            idx = torch.cat((idx, next_token), dim=1)
            if stop_token is not None:
                finished |= next_token[:, 0] == stop_token
                if finished.all():
                    break
        return idx
