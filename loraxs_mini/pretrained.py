"""
Loading pretrained GPT-2 weights into our model, and saving them back.

What this file teaches
----------------------
A checkpoint is a dictionary name -> tensor. Loading one is mapping its names
onto ours and checking every shape. OpenAI's GPT-2 was written with
"Conv1D" layers that store their weight as in x out and compute x @ W + b;
`nn.Linear` stores out x in and computes x @ W^T + b. So exactly four
matrices per block are transposed on the way in (and out again on save):

    attn.c_attn.weight   (C, 3C) -> (3C, C)
    attn.c_proj.weight   (C, C)  -> (C, C)
    mlp.c_fc.weight      (C, 4C) -> (4C, C)
    mlp.c_proj.weight    (4C, C) -> (C, 4C)

Two naming layouts exist. The Hub's original files name tensors without a
prefix ("wte.weight", "h.0.attn.c_attn.weight") and also store each block's
causal-mask buffer ("h.0.attn.bias", not a weight at all); files written by
`transformers`' save_pretrained put "transformer." in front of every name.
Both load here; the output head is tied to wte, so it is never stored.
"""

import json
from pathlib import Path

import torch

from .download import download_checkpoint
from .errors import LoraxsError
from .files import atomic_write
from .model import GPT, PRESETS, PRETRAINED, GPTConfig
from .safetensors_file import load_file, parse_json, save_file

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LAYER_NORMS_AND_BIASES = (
    "ln_1.weight",
    "ln_1.bias",
    "ln_2.weight",
    "ln_2.bias",
    "attn.c_attn.bias",
    "attn.c_proj.bias",
    "mlp.c_fc.bias",
    "mlp.c_proj.bias",
)
BLOCK_TENSORS = LAYER_NORMS_AND_BIASES + CONV1D_WEIGHTS


def checkpoint_names(n_layer):
    """Our parameter name -> (Hugging Face name without prefix, stored transposed?)."""
    names = {f"transformer.{name}": (name, False) for name in ("wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias")}
    for layer in range(n_layer):
        for name in BLOCK_TENSORS:
            names[f"transformer.h.{layer}.{name}"] = (f"h.{layer}.{name}", name in CONV1D_WEIGHTS)
    return names


def load_pretrained(name_or_path, dropout=0.0, dtype=torch.float32):
    """
    A preset name ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl'), a folder
    holding config.json and model.safetensors, or a bare .safetensors file.
    Weights are converted to `dtype` (float32 by default, for training).
    """
    source = str(name_or_path)
    config = None
    if source in PRETRAINED:
        path, config = download_checkpoint(source), GPTConfig.from_name(source, dropout=dropout)
    elif source in PRESETS:
        raise LoraxsError(
            f"the preset {source!r} is a shape for tests and lessons and has no pretrained weights; "
            f"build it with GPT(GPTConfig.from_name({source!r})) (train.py: --init-from random:{source})"
        )
    elif Path(source).is_dir():
        path = Path(source) / "model.safetensors"
        config_path = Path(source) / "config.json"
        if not path.is_file() or not config_path.is_file():
            raise LoraxsError(f"the folder {source} must hold config.json and model.safetensors")
        config = config_from_huggingface(read_json(config_path), name=Path(source).resolve().name, dropout=dropout)
    elif Path(source).is_file() and Path(source).suffix.lower() == ".json":  # config.json given for the weights
        raise LoraxsError(
            f"{source} is a JSON file, not the weights: give the folder that holds it and model.safetensors, or "
            "the .safetensors file itself"
        )
    elif Path(source).is_file():
        path = Path(source)
    else:
        raise LoraxsError(
            f"{source!r} is neither a preset ({', '.join(PRETRAINED)}) nor an existing folder "
            "with config.json and model.safetensors, nor a .safetensors file"
        )

    stored, _ = load_file(path)
    tensors = {name.removeprefix("transformer."): tensor for name, tensor in stored.items()}
    if len(tensors) < len(stored):
        twice = sorted(name for name in stored if name.startswith("transformer.") and name[12:] in stored)
        raise LoraxsError(
            f"{source} holds both {twice[0]!r} and {twice[0][12:]!r}: one tensor under two names; which is meant?"
        )
    if config is None:
        config = config_from_shapes(tensors, name=path.stem, source=source, dropout=dropout)
    state = state_from_checkpoint(tensors, config, source, dtype)

    # Build on the 'meta' device (shapes only, no memory, no random init), then adopt the loaded tensors.
    with torch.device("meta"):
        model = GPT(config)
    model.load_state_dict(state, assign=True)
    model.lm_head.weight = model.transformer.wte.weight  # assign=True replaced wte's Parameter: tie again
    return model


def base_model(init_from):
    """
    train.py's --init-from: a preset or checkpoint (pretrained weights, load_pretrained), or
    random:<preset or checkpoint folder>, the same shape with fresh weights drawn from seed 0: the baseline
    that shows what pretraining brings.
    """
    if not init_from.startswith("random:"):
        return load_pretrained(init_from)
    source = init_from.removeprefix("random:")
    if source in PRESETS:
        config = GPTConfig.from_name(source)
    elif Path(source, "config.json").is_file():
        config = config_from_huggingface(read_json(Path(source, "config.json")), Path(source).resolve().name)
    else:
        raise LoraxsError(
            f"--init-from random:{source} needs a preset ({', '.join(PRESETS)}) or a folder with a config.json "
            "to take the shape from"
        )
    config.name = f"random-{config.name}"
    torch.manual_seed(0)  # every run and seed of the command starts from the same random weights
    return GPT(config)


def state_from_checkpoint(tensors, config, source, dtype):
    expected_shapes = {name: p.shape for name, p in _shape_model(config).named_parameters()}
    state, missing = {}, []
    for ours, (theirs, transposed) in checkpoint_names(config.n_layer).items():
        if theirs not in tensors:
            missing.append(theirs)
            continue
        tensor = tensors.pop(theirs)
        if not tensor.is_floating_point():  # .to(dtype) would turn integers or booleans into weights in silence
            raise LoraxsError(f"{source}: tensor {theirs!r} holds {tensor.dtype}, not floating-point weights")
        if not torch.isfinite(tensor).all():  # NaN logits later would look like a bad learning rate
            raise LoraxsError(f"{source}: tensor {theirs!r} holds NaN or infinite values; the checkpoint is corrupt")
        if tensor.dim() != len(expected_shapes[ours]):
            raise LoraxsError(
                f"{source}: tensor {theirs!r} has {tensor.dim()} dimensions, but the config needs "
                f"{tuple(expected_shapes[ours])}"
            )
        tensor = tensor.t() if transposed else tensor
        if tensor.shape != expected_shapes[ours]:
            stored = f"{tuple(tensor.t().shape)} stored in x out" if transposed else tuple(tensor.shape)
            raise LoraxsError(
                f"{source}: tensor {theirs!r} has shape {stored}, but the config needs {tuple(expected_shapes[ours])}"
            )
        state[ours] = tensor.to(dtype).contiguous()
    state["lm_head.weight"] = state.get("transformer.wte.weight")

    # What may be left: the mask buffers (h.N.attn.bias / masked_bias) and a copy of the tied head.
    unexpected = [
        name
        for name in tensors
        if not (name.endswith(("attn.bias", "attn.masked_bias")) and name.startswith("h.")) and name != "lm_head.weight"
    ]
    if missing or unexpected:
        details = []
        if missing:
            details.append(f"missing {len(missing)} tensors, e.g. {', '.join(missing[:3])}")
        if unexpected:
            details.append(f"unexpected {len(unexpected)} tensors, e.g. {', '.join(unexpected[:3])}")
        raise LoraxsError(f"{source} does not look like a GPT-2 checkpoint of this shape: {'; '.join(details)}")
    return state


def _shape_model(config):
    with torch.device("meta"):
        return GPT(config)


def read_json(path):
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise LoraxsError(f"cannot read {path}: {error.strerror}") from None
    return parse_json(text, str(path))


def config_from_huggingface(hf, name, dropout=0.0):
    """A Hugging Face GPT2Config dictionary -> GPTConfig, refusing what this model cannot represent."""
    if not isinstance(hf, dict):
        raise LoraxsError(f"{name}: config.json must hold a JSON object, not {type(hf).__name__}")
    if hf.get("model_type") != "gpt2":
        raise LoraxsError(f"{name}: model_type is {hf.get('model_type')!r}; only GPT-2 checkpoints ('gpt2') load here")
    missing = [key for key in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd") if key not in hf]
    if missing:
        raise LoraxsError(f"{name}: config.json lacks {', '.join(missing)}; a GPT-2 config.json has them all")
    n_embd = hf["n_embd"]
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"),
        "n_inner": hf.get("n_inner") not in (None, 4 * n_embd),
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
        "tie_word_embeddings": not hf.get("tie_word_embeddings", True),
    }
    for key, is_unsupported in unsupported.items():
        if is_unsupported:
            raise LoraxsError(
                f"{name}: config.json sets {key}={hf.get(key)!r}, which GPT-2 (and this model) does not use"
            )
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf["n_positions"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=n_embd,
            layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
            dropout=dropout,
            name=name,
        )
    except LoraxsError as error:
        raise LoraxsError(f"{name}: config.json: {error}") from None


def config_from_shapes(tensors, name, source, dropout=0.0):
    """A bare .safetensors file has no config: read the shape off the tensors, the head count off a preset."""
    if "wte.weight" not in tensors or "wpe.weight" not in tensors:
        raise LoraxsError(f"{source} does not look like a GPT-2 checkpoint: it has no wte.weight / wpe.weight")
    if tensors["wte.weight"].dim() != 2 or tensors["wpe.weight"].dim() != 2:
        raise LoraxsError(f"{source}: wte.weight and wpe.weight must be matrices (vocabulary or positions x width)")
    vocab_size, n_embd = tensors["wte.weight"].shape
    block_size = tensors["wpe.weight"].shape[0]
    layers = [key.split(".")[1] for key in tensors if key.startswith("h.")]  # h.<layer>.<name>
    n_layer = 1 + max((int(layer) for layer in layers if layer.isdigit()), default=-1)  # other names: reported later
    for preset in PRETRAINED:
        shape = PRESETS[preset]
        if (shape["n_layer"], shape["n_embd"]) == (n_layer, n_embd):
            return GPTConfig(vocab_size, block_size, n_layer, shape["n_head"], n_embd, dropout=dropout, name=preset)
    raise LoraxsError(
        f"{source} has {n_layer} layers of width {n_embd}, which matches no GPT-2 preset, and a bare "
        "safetensors file does not say how many attention heads it has. Put it in a folder next to "
        "its config.json (with n_head) and pass the folder."
    )


def save_pretrained(model, folder):
    """Write `model` as config.json + model.safetensors in Hugging Face's GPT-2 layout."""
    config, folder = model.config, Path(folder)
    parameters = dict(model.named_parameters())
    if set(parameters) != set(checkpoint_names(config.n_layer)):  # adapters rename layers and add tensors
        raise LoraxsError("this model has layers GPT-2 does not (adapters?); merge them first: "
                          "model = merge_adapters(model)")  # fmt: skip
    tensors = {}
    for ours, (theirs, transposed) in checkpoint_names(config.n_layer).items():
        tensor = parameters[ours].detach()
        tensors[f"transformer.{theirs}"] = tensor.t().contiguous() if transposed else tensor
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})  # transformers checks "format"
    hf_config = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "tie_word_embeddings": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": str(model.lm_head.weight.dtype).removeprefix("torch."),
    }
    with atomic_write(folder / "config.json", "w") as file:
        json.dump(hf_config, file, indent=2)
