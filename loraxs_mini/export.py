"""
Our adapters out to Hugging Face PEFT's format, and PEFT's LoRA adapters in.

    python -m loraxs_mini.export out/sentiment-loraxs-r8.safetensors --base gpt2 --to gpt2-loraxs-peft
    python -m loraxs_mini.export ADAPTER --base gpt2 --to DIR --as-lora     any method, as a plain LoRA

The folder holds adapter_config.json and adapter_model.safetensors, what
`peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(base), DIR)`
loads, and what the inference servers that serve PEFT LoRA files read.

What this file teaches: every adapter here is a LoRA in disguise. Each writes
ΔW as (out x r)(r x in), so each can be handed over as a LoRA pair A', B' with
PEFT's scale lora_alpha / r set to 1 (lora_alpha = r); each adapter class
says how, in its `lora_factors` (by default, from the SVD of ΔW):

    LoRA       A' = A          B' = (alpha / r) B
    LoRA-XS    A' = A          B' = (alpha / r) B R      PEFT has no LoRA-XS: it runs as a LoRA of rank r
    LoRA-SB    A' = A          B' = B R                   nor LoRA-SB
    VeRA       A' = Λ_d A      B' = Λ_b B                 (A, B: this layer's slices of the shared pair)
    TinyLoRA   A' = A          B' = B R                   R = Σ_i v_i P_i

That is exact, not an approximation: A' and B' multiply to the same ΔW. VeRA
and TinyLoRA also go out as themselves (PEFT's `vera` and `tinylora`, with
their frozen pair or projections saved, their classes' `peft_format`), so they
stay a few numbers per layer.

Layouts, and what the export converts:
- Names: ours are Hugging Face's GPT-2 names ("transformer.h.0.attn.c_attn");
  PEFT prefixes "base_model.model." to a layer's tensors.
- GPT-2's Conv1D stores its weight (in, out), our nn.Linear (out, in). PEFT's
  LoRA keeps lora_A (r x in) and lora_B (out x r) in nn.Linear's layout either
  way and transposes ΔW itself when `fan_in_fan_out` is true; VeRA's vectors
  and TinyLoRA's A, B and P are layout-free the same way. So the tensors go
  out as they are, with fan_in_fan_out = true in the config.
- q, k and v adapted separately (qkv.py) are one LoRA on the fused c_attn of
  rank 3r: A' stacks the three A's (3r x C), B' puts the three B's on the
  diagonal of a 3C x 3r matrix (B_q in the rows of q, and so on), and
  [q | k | v] = c_attn(x) makes that exact. PEFT gives those layers rank 3r
  through `rank_pattern` and `alpha_pattern`. VeRA and TinyLoRA on q, k, v
  have three d's (or v's) where PEFT's fused layer has one: they export only
  as LoRA (--as-lora).

Import goes the other way, for LoRA only: a PEFT LoRA adapter for GPT-2
becomes our LoRA adapter (scale lora_alpha / r, or / sqrt(r) with rsLoRA), so
adapters trained elsewhere can be inspected with this project's tools.
"""

import json
import math
import re
import sys
from pathlib import Path

import torch

from .adapters import (
    AdaptedLinear,
    AdapterConfig,
    LoRALinear,
    SplitQKV,
    adapted_layers,
    add_adapters,
    check_adapters,
    load_adapters,
)
from .adapters.base import PEFT_PREFIX as PREFIX
from .adapters.checks import read_adapter_config
from .adapters.qkv import PARTS
from .cli import ArgumentParser
from .errors import LoraxsError, friendly_errors
from .files import atomic_write, check_writable_folder
from .model import PRETRAINED
from .pretrained import load_pretrained
from .safetensors_file import load_file, parse_json, save_file

CONFIG_FILE, TENSOR_FILE = "adapter_config.json", "adapter_model.safetensors"


def fused_factors(split):
    """q, k, v adapted apart -> one pair for c_attn: A' = [A_q; A_k; A_v], B' = block-diagonal. Unadapted: zero."""
    C = split.q.in_features
    parts = [(index, getattr(split, name)) for index, name in enumerate(PARTS)]
    pairs = [(index, part.lora_factors()) for index, part in parts if isinstance(part, AdaptedLinear)]
    rank = sum(A.shape[0] for _, (A, _) in pairs)
    A_fused, B_fused, column = torch.cat([A for _, (A, _) in pairs]), torch.zeros(3 * C, rank), 0
    for index, (A, B) in pairs:
        B_fused[index * C : (index + 1) * C, column : column + A.shape[0]] = B  # this third's rows, its r columns
        column += A.shape[0]
    return A_fused, B_fused


def as_lora(model):
    """name -> (A', B') for every adapted layer; q, k and v folded into their c_attn."""
    factors = {}
    for name, module in model.named_modules():
        if isinstance(module, SplitQKV) and adapted_layers(module):
            factors[name] = fused_factors(module)
        elif isinstance(module, AdaptedLinear) and not name.endswith(tuple(f"c_attn.{part}" for part in PARTS)):
            factors[name] = module.lora_factors()
    return factors


def lora_export(model, base_name):
    """PEFT LoRA: every pair with lora_alpha = its rank (scale 1); layers of another rank named in rank_pattern."""
    factors = as_lora(model)
    ranks = {name: A.shape[0] for name, (A, _) in factors.items()}
    rank = min(ranks.values())
    # c_attn at 3r when q, k, v were adapted apart. PEFT reads these keys as regular expressions: escape the dots.
    other = {re.escape(name): r for name, r in ranks.items() if r != rank}
    tensors = {}
    for name, (A, B) in factors.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = A.detach().float().contiguous()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = B.detach().float().contiguous()
    settings = {
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "rank_pattern": other, "alpha_pattern": dict(other),
        "lora_dropout": model.adapter_config.dropout, "use_rslora": False, "use_dora": False, "init_lora_weights": True,
    }  # fmt: skip
    return peft_settings(base_name, factors, settings), tensors


def peft_settings(base_name, targets, settings):
    """adapter_config.json: what every PEFT adapter says (the base, its layers, GPT-2's Conv1D layout), then its own."""
    common = {"base_model_name_or_path": base_name, "task_type": None, "inference_mode": True,
              "target_modules": sorted(targets), "fan_in_fan_out": True, "bias": "none"}  # fmt: skip
    return {**common, **settings}


def peft_adapter(model, base_name, as_lora_only=False):
    """(adapter_config.json's dict, the tensors) for the model's adapter; refuses what PEFT cannot express."""
    config = getattr(model, "adapter_config", None)
    if config is None:
        raise LoraxsError(
            "this model has no adapters (a plain model, or one whose adapters were merged): there is nothing to "
            "export; add_adapters or load_adapters first, or write the whole model with save_pretrained"
        )
    if not issubclass(config.method_class, AdaptedLinear):
        raise LoraxsError(
            f"a {config.method!r} model has no adapter to export: {config.method_class.display_name} adds none, so "
            "write the whole model with save_pretrained(model, folder), which transformers opens as it is"
        )
    layers = adapted_layers(model)
    native = None if as_lora_only else config.method_class.peft_format(layers, config)
    if native is None:  # PEFT has no such method (LoRA-XS), or it is asked for as a LoRA: an exact LoRA
        return lora_export(model, base_name)
    if any(isinstance(module, SplitQKV) for module in model.modules()):
        raise LoraxsError(
            f"PEFT's {config.method} adapts c_attn whole, with one set of trained vectors; this adapter has one each "
            "for q, k and v. Export it as an exact LoRA instead: add --as-lora (export_to_peft(..., as_lora=True))"
        )
    settings, tensors = native
    return peft_settings(base_name, layers, settings), tensors


# A folder that holds any of these is a model's: an adapter written there would be loaded with the model from then on.
MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def check_destination(folder):
    """Before anything is written: a folder this user can write, holding no model, with no folder in the files' way."""
    check_writable_folder(folder, "the destination")
    held = [name for name in MODEL_FILES if (folder / name).exists()]
    if held:
        raise LoraxsError(
            f"{folder} holds a model ({held[0]}); an adapter written there would be loaded with that model from then "
            "on (transformers reads adapter_config.json in a model's folder). Choose a folder of the adapter's own"
        )
    for name in (CONFIG_FILE, TENSOR_FILE):
        if (folder / name).is_dir():
            raise LoraxsError(
                f"{folder / name} is a folder, but the export writes a file there; move it or choose another"
            )


def export_to_peft(model, folder, base_name, as_lora=False):
    """Write the model's adapter as a PEFT adapter folder. Returns the two files' sizes in bytes."""
    folder = Path(folder)
    check_destination(folder)
    settings, tensors = peft_adapter(model, base_name, as_lora)  # checked and built before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, folder / TENSOR_FILE)
    with atomic_write(folder / CONFIG_FILE, "w") as file:
        json.dump(settings, file, indent=2)
    return {name: (folder / name).stat().st_size for name in (CONFIG_FILE, TENSOR_FILE)}


# What a PEFT LoRA folder may set and still be the plain LoRA we reproduce: init_lora_weights of these kinds change only
# how A and B start (PiSSA, OLoRA, CorDA and LoftQ change the base weights too; MiCA runs another forward), and every
# setting below, when set, makes the adapter compute something a plain LoRA does not.
PLAIN_INITS = (True, False, "gaussian", "orthogonal", "eva")
NOT_PLAIN = ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform", "layer_replication",
             "alora_invocation_tokens", "lora_bias", "use_qalora", "target_parameters", "trainable_token_indices",
             "arrow_config", "megatron_config")  # fmt: skip
LORA_TENSOR = re.compile(r"base_model\.model\.(?P<layer>[\w.]+)\.lora_(?P<part>[AB])\.weight")


def read_peft_lora(folder):
    """(settings, tensors, layer names) of a PEFT LoRA folder, every setting and name checked; refuses the rest."""
    for name in (CONFIG_FILE, TENSOR_FILE):
        if not (folder / name).is_file():
            raise LoraxsError(f"{folder} has no {name}: a PEFT adapter folder holds {CONFIG_FILE} and {TENSOR_FILE}")
    try:
        text = (folder / CONFIG_FILE).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise LoraxsError(f"{folder / CONFIG_FILE} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    settings = parse_json(text, f"{folder / CONFIG_FILE}")
    kind = settings.get("peft_type") if isinstance(settings, dict) else None
    if kind != "LORA":
        if isinstance(kind, str) and kind.upper() == "LORA":
            raise LoraxsError(f"{folder}: its peft_type is {kind!r}; PEFT writes and reads 'LORA' (capitals)")
        raise LoraxsError(f"{folder} holds a PEFT {kind or 'unknown'} adapter; only LoRA adapters can be imported")
    unplain = [key for key in NOT_PLAIN if settings.get(key)] + (
        ["bias"] if settings.get("bias", "none") != "none" else []
    )
    init = settings.get("init_lora_weights", True)
    if unplain or not any(init is plain or init == plain for plain in PLAIN_INITS):
        what = ", ".join(unplain) if unplain else f"init_lora_weights={init!r} (it changes more than where A, B start)"
        raise LoraxsError(f"{folder}: a LoRA with {what} is more than a plain LoRA; this project cannot reproduce it")
    rank, alpha, dropout = settings.get("r"), settings.get("lora_alpha"), settings.get("lora_dropout", 0.0)
    if type(rank) is not int or rank < 1 or type(alpha) not in (int, float) or not alpha > 0:
        raise LoraxsError(f"{folder}: r and lora_alpha should be positive numbers, got {rank!r} and {alpha!r}")
    if type(dropout) not in (int, float):
        raise LoraxsError(f"{folder}: lora_dropout should be a number, got {dropout!r}")

    tensors = load_file(folder / TENSOR_FILE)[0]
    layers = {}  # layer -> the parts found
    for key in tensors:
        match = LORA_TENSOR.fullmatch(key)
        if not match:
            raise LoraxsError(
                f"{folder / TENSOR_FILE} holds {key!r}, which is no LoRA tensor of a named layer (lora_A or "
                "lora_B.weight of a layer such as transformer.h.0.attn.c_attn)"
            )
        layers.setdefault(match["layer"], set()).add(match["part"])
    for layer, parts in sorted(layers.items()):
        if parts != {"A", "B"}:
            raise LoraxsError(f"{folder / TENSOR_FILE} holds lora_{parts.pop()} of {layer} but not its partner")
        if not layer.startswith("transformer.h."):
            raise LoraxsError(
                f"{folder}: it adapts {layer!r}; an adapter imported here adapts the blocks of GPT2LMHeadModel "
                "(transformer.h.N...): one made on GPT2Model (h.N...) or on lm_head is another model's"
            )
        excluded = settings.get("exclude_modules")
        if not peft_targets(settings.get("target_modules"), layer) or (excluded and peft_targets(excluded, layer)):
            raise LoraxsError(
                f"{folder}: its target_modules {settings.get('target_modules')!r} (less exclude_modules) does not name "
                f"{layer}, whose tensors it holds; PEFT would leave them out. The config and the tensors disagree"
            )
    if not layers:
        raise LoraxsError(f"{folder / TENSOR_FILE} holds no LoRA tensors")
    return settings, tensors, sorted(layers)


def peft_targets(target_modules, layer):
    """Does PEFT's target_modules take this layer? A string is a regular expression for the whole name; a list names
    the layers' ends ("c_attn" takes "transformer.h.0.attn.c_attn"); "all-linear" every linear layer but the head."""
    if target_modules == "all-linear":
        return True
    if isinstance(target_modules, str):
        try:
            return re.fullmatch(target_modules, layer) is not None
        except re.error as error:
            raise LoraxsError(f"target_modules {target_modules!r} is not a regular expression ({error})") from None
    if isinstance(target_modules, list):
        return any(isinstance(end, str) and (layer == end or layer.endswith(f".{end}")) for end in target_modules)
    return False


def import_peft_lora(model, folder):
    """
    Load a PEFT LoRA adapter folder for GPT-2 into `model` as our LoRA adapter; returns the model. Everything is
    checked before the model changes: a refused import leaves it as it was.
    """
    folder = Path(folder)
    settings, tensors, names = read_peft_lora(folder)
    rank, alpha = settings["r"], settings["lora_alpha"]
    if settings.get("use_rslora"):  # rsLoRA scales by alpha / sqrt(r); ours scales by alpha / r
        alpha = alpha * math.sqrt(rank)
    dropout = float(settings.get("lora_dropout", 0.0))
    config = AdapterConfig(LoRALinear.name, rank, float(alpha), names, dropout)
    layers = check_adapters(model, config)  # every name must be one of our linear layers
    for name, layer in layers.items():
        A, B = tensors[f"{PREFIX}{name}.lora_A.weight"], tensors[f"{PREFIX}{name}.lora_B.weight"]
        if A.shape != (rank, layer.in_features) or B.shape != (layer.out_features, rank):
            raise LoraxsError(
                f"{folder}: {name}'s lora_A is {tuple(A.shape)} and lora_B {tuple(B.shape)}; this model needs "
                f"{(rank, layer.in_features)} and {(layer.out_features, rank)}. Is it an adapter for this base?"
            )
        if not (
            A.is_floating_point() and B.is_floating_point() and torch.isfinite(A).all() and torch.isfinite(B).all()
        ):
            raise LoraxsError(f"{folder}: {name}'s lora_A or lora_B is not finite floating-point numbers")
    add_adapters(model, config)
    with torch.no_grad():
        for name, adapter in adapted_layers(model).items():
            adapter.A.copy_(tensors[f"{PREFIX}{name}.lora_A.weight"])
            adapter.B.copy_(tensors[f"{PREFIX}{name}.lora_B.weight"])
    return model


CHECK_TOLERANCE = 1e-4  # float32 logits: ours and PEFT's add the same numbers in another order


def compare_with_peft(model, folder, base_name):
    """The largest logit difference between `model` and transformers + PEFT running the exported folder."""
    try:
        import peft  # optional extras: only this check needs them
        import transformers
    except ImportError:
        raise LoraxsError(
            "--check loads the folder with transformers and PEFT: pip install transformers peft"
        ) from None
    # float32, as ours: transformers 5 keeps a checkpoint's own dtype (float16 for the Hub's GPT-2 files), and float16
    # arithmetic alone would differ from ours by about 3e-2.
    base = transformers.GPT2LMHeadModel.from_pretrained(base_name).float()
    theirs = peft.PeftModel.from_pretrained(base, folder).float().eval()
    idx = torch.randint(0, model.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model.eval()(idx)[0] - theirs(idx).logits).abs().max().item()


def main(argv=None):
    parser = ArgumentParser(description="Write one of our adapter files as a PEFT adapter folder.")
    parser.add_argument("adapter", type=Path, help="an adapter file written by train.py or save_adapters")
    parser.add_argument("--base", required=True, help="the base model it was trained on: gpt2, ..., or a folder")
    parser.add_argument("--to", required=True, type=Path, help="the folder to write (made if missing)")
    parser.add_argument("--as-lora", action="store_true", help="write any method as an exact LoRA")
    parser.add_argument("--check", action="store_true", help="load the folder with transformers + PEFT, compare logits")
    args = parser.parse_args(argv)
    check_destination(args.to)  # before the base model loads, and again before writing
    if not args.adapter.is_file():
        raise LoraxsError(f"{args.adapter} is not a file; give an adapter file written by train.py")
    read_adapter_config(args.adapter)  # not one of ours: one clear line before the base model loads
    model = load_adapters(load_pretrained(args.base), args.adapter)
    base_name = f"openai-community/{args.base}" if args.base in PRETRAINED else args.base  # the Hub's name for it
    sizes = export_to_peft(model, args.to, base_name, args.as_lora)
    as_itself = json.loads((args.to / CONFIG_FILE).read_text())["peft_type"] != "LORA"
    kind = model.adapter_config.method_class.display_name if as_itself else "LoRA"
    print(f"wrote {args.to}: a PEFT {kind} adapter ({sizes[CONFIG_FILE]:,} + {sizes[TENSOR_FILE]:,} bytes)")
    if args.check:
        difference = compare_with_peft(model, args.to, base_name)
        said = f"transformers + PEFT with {args.to} against this model, 2 x 64 random tokens: the largest logit "
        said += f"difference is {difference:.1e}"
        if not difference <= CHECK_TOLERANCE:
            raise LoraxsError(
                f"{said}, more than the {CHECK_TOLERANCE:g} it may be: the export does not reproduce "
                "this adapter (failed)"
            )
        print(f"{said}, within {CHECK_TOLERANCE:g}: passed")


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
