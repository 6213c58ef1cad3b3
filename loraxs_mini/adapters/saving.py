"""
Saving what was trained, and loading it back into the right model.

An adapter file is a safetensors file holding the trained tensors (LoRA's A
and B, VeRA's d and b, LoRA-XS's R; every weight for "full") and, as JSON
metadata, the AdapterConfig, the base model's name and shape, and checks.

The frozen tensors (LoRA-XS's B and A, VeRA's random pair) are rebuilt when
the file is loaded: B and A from the SVD of the base weights, the pair from
its seed. (LoRA-SB's B and A come from training data, which the file does not
hold: its files always store them.) That keeps files tiny (19 KB for LoRA-XS on GPT-2), but a rebuild
can come out differently: where σ_r ≈ σ_{r+1} another machine's SVD may find
another top-r subspace, and another random-number implementation another
pair. So the file keeps a checksum of each frozen tensor, and loading refuses
a rebuild that does not match. `save_adapters(..., frozen=True)` stores the
frozen tensors themselves instead, and the file then loads bit for bit
anywhere.

Loading also checks the base model, not just its shape: LoRA-XS's R only
means something together with the B and A of the weights it was trained on.
A fingerprint of the base weights catches an adapter loaded onto different
weights of the same shape: Σ W² over all of them, and two sums of random
projections uᵀ W v with fresh u and v for each weight, so that swapped rows or
swapped layers change it too.

Everything in the header is checked before the model is touched, and a
refused load leaves the model exactly as it was.
"""

import json
import math
import warnings
from dataclasses import fields
from pathlib import Path

import torch

from ..errors import LoraxsError
from ..safetensors_file import load_file, parse_json, read_header, save_file
from .config import AdapterConfig, method_settings
from .inject import adapted_layers, adapter_parameters, add_adapters, remove_adapters

SHAPE_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
METADATA_KEYS = ("adapter_config", "base_model", "base_shape", "base_fingerprint", "frozen_stored")


def trained_tensors(model):
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def frozen_tensors(model):
    """The adapters' frozen tensors (LoRA-XS's B and A, VeRA's shared pair, once): their buffers."""
    prefixes = tuple(f"{name}." for name in adapted_layers(model))
    return {name: buffer for name, buffer in model.named_buffers() if name.startswith(prefixes)}


def base_weights(model):
    """
    The base model's weights as the plain model names them, in its order, whatever adapters wrap them: an adapted
    layer's W is `....base.weight`, and q, k, v adapted apart are three row blocks of one c_attn (qkv.py), put
    back together here.
    """
    added = {id(parameter) for parameter in adapter_parameters(model)}
    weights = {}
    for name, parameter in model.named_parameters():
        if id(parameter) in added:
            continue
        name = name.replace(".base.", ".")
        fused, _, part_and_kind = name.rpartition(".attn.c_attn.")
        if part_and_kind[:2] in ("q.", "k.", "v."):  # ....attn.c_attn.q.weight -> ....attn.c_attn.weight, rows q
            name = f"{fused}.attn.c_attn.{part_and_kind[2:]}"
            weights[name] = torch.cat([weights[name], parameter]) if name in weights else parameter
        else:
            weights[name] = parameter
    return weights


def base_fingerprint(model):
    """
    [Σ W², Σ_t u_tᵀ W_t v_t, Σ_t u'_tᵀ W_t v'_t] over every weight W_t of the base model (the adapters' own tensors
    left out), in float64, with u_t, v_t drawn from a fixed seed for each weight in turn.
    """
    generator = torch.Generator().manual_seed(0)
    fingerprint = [0.0, 0.0, 0.0]
    for parameter in base_weights(model).values():
        weight = parameter.detach().double().cpu().reshape(len(parameter) if parameter.dim() else 1, -1)  # rows x rest
        fingerprint[0] += weight.square().sum().item()
        for k in (1, 2):
            u = torch.randn(weight.shape[0], generator=generator, dtype=torch.float64)
            v = torch.randn(weight.shape[1], generator=generator, dtype=torch.float64)
            fingerprint[k] += (u @ weight @ v).item()
    return fingerprint


def same_fingerprint(ours, theirs):
    """Equal up to rounding: Σ W² to 1e-6 of itself, each projection sum (about sqrt(Σ W²) in size) to 1e-6 of that."""
    scale = max(ours[0], 1.0)
    return abs(ours[0] - theirs[0]) <= 1e-6 * scale and all(
        abs(a - b) <= 1e-6 * math.sqrt(scale) for a, b in zip(ours[1:], theirs[1:])
    )


def checksum(tensor):
    """
    Two random weighted sums of the tensor's entries, in float64, to 6 digits.
    Rounding moves them by about the rounding; a different tensor T' by about
    |T - T'|_F.
    """
    weights = torch.randn(2, tensor.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return [float(f"{total:.6g}") for total in (weights @ tensor.detach().double().cpu().flatten()).tolist()]


def save_adapters(model, path, frozen=False):
    """
    Write the trained tensors and the AdapterConfig; with `frozen`, the frozen
    tensors too, so that loading needs no SVD and is exact on any machine.
    Returns the file size in bytes.
    """
    config = getattr(model, "adapter_config", None)
    if config is None or not config.method_class.trains:
        raise LoraxsError("this model has no adapters to save; add them with add_adapters(model, method)")
    tensors = trained_tensors(model)
    frozen = frozen or config.method_class.stores_frozen  # LoRA-SB's B and A come from data: always stored
    metadata = {
        "adapter_config": json.dumps(config.to_dict()),
        "base_model": json.dumps(model.config.name),
        "base_shape": json.dumps({key: getattr(model.config, key) for key in SHAPE_KEYS}),
        "base_fingerprint": json.dumps(base_fingerprint(model)),
        "frozen_stored": json.dumps(frozen),
    }
    if frozen:
        tensors |= frozen_tensors(model)
    else:
        metadata["frozen_checksums"] = json.dumps([checksum(tensor) for tensor in frozen_tensors(model).values()])
    save_file(tensors, path, metadata)
    return Path(path).stat().st_size


def read_adapter_config(path):
    """(config, metadata) of an adapter file, from its header alone; refuses files that are not adapter files."""
    _, metadata, _ = read_header(path)
    not_ours = (
        f"{path} is not an adapter file written by this version of loraxs-mini (its metadata lacks one of "
        f"{', '.join(METADATA_KEYS)}, or one of them is not what it should be)"
    )
    if not all(key in metadata for key in METADATA_KEYS):
        raise LoraxsError(not_ours)
    saved = {key: parse_json(value, f"{path}: its metadata {key!r}") for key, value in metadata.items()}
    if not well_formed(saved):
        raise LoraxsError(not_ours)
    recipe, every_field = saved["adapter_config"], {field.name for field in fields(AdapterConfig)}
    # Files written before a method's own settings existed (TinyLoRA's u and weight_tying, LoRA-XS's subspace) lack
    # them: None is what they were trained with, another method's setting or the method's default (LoRA-XS: top).
    recipe = {**dict.fromkeys(method_settings()), **recipe}
    if recipe.keys() != every_field:  # a missing field would silently take today's default, not the trained value
        raise LoraxsError(
            f"{path}: its adapter_config should give {', '.join(sorted(every_field))}; it gives "
            f"{', '.join(sorted(recipe)) or 'none'}. Was it edited?"
        )
    try:
        config = AdapterConfig(**recipe)
    except (TypeError, LoraxsError) as error:
        raise LoraxsError(f"{path}: its adapter_config is not valid ({error})") from None
    return config, saved


def well_formed(saved):
    """Every metadata field of the type save_adapters writes: a hand-edited file fails here, not in a traceback."""

    def number(x):
        return type(x) in (int, float) and math.isfinite(x)

    shape, fingerprint, checksums = saved["base_shape"], saved["base_fingerprint"], saved.get("frozen_checksums", [])
    return (
        isinstance(saved["adapter_config"], dict)
        and isinstance(saved["base_model"], str)
        and isinstance(shape, dict)
        and shape.keys() == set(SHAPE_KEYS)
        and all(type(n) is int and n > 0 for n in shape.values())
        and isinstance(fingerprint, list)
        and len(fingerprint) == 3
        and all(number(x) for x in fingerprint)
        and type(saved["frozen_stored"]) is bool
        and isinstance(checksums, list)
        and all(isinstance(pair, list) and len(pair) == 2 and all(number(x) for x in pair) for pair in checksums)
    )


def load_adapters(model, path):
    """
    Load an adapter file into `model`: adds the adapters its AdapterConfig
    describes if the model has none yet, checks, then copies the tensors in.
    Refuses a base model of another shape or other weights, a model that
    already carries a different adapter, and frozen tensors that rebuild
    differently here. A refused load leaves the model exactly as it was.
    """
    config, saved = read_adapter_config(path)
    shape = {key: getattr(model.config, key) for key in SHAPE_KEYS}
    if saved["base_shape"] != shape:
        raise LoraxsError(
            f"{path} was trained on {saved['base_model']} with shape {saved['base_shape']}, but this model "
            f"({model.config.name}) has shape {shape}; load it into the model it was trained on"
        )
    # A full fine-tune stores every weight, so any base of the right shape will do; adapters need theirs.
    if not config.method_class.trains_base:
        if not same_fingerprint(base_fingerprint(model), saved["base_fingerprint"]):
            raise LoraxsError(
                f"{path} was trained on other weights than this model's (base {saved['base_model']!r}, same "
                "shape but different values); load it into the base model it was trained on"
            )
    if config.method_class.stores_frozen and not saved["frozen_stored"]:
        raise LoraxsError(f"{path} lacks the frozen tensors of its {config.method_class.display_name} adapter, which "
                          "cannot be rebuilt from the base model; was it edited?")  # fmt: skip
    current = getattr(model, "adapter_config", None)
    if current is not None:
        for field in fields(AdapterConfig):  # dropout acts only in training: any value may load
            if field.name != "dropout" and getattr(current, field.name) != getattr(config, field.name):
                raise LoraxsError(
                    f"{path} holds a {config.method} adapter with {field.name}={getattr(config, field.name)!r}, "
                    f"but this model already has {field.name}={getattr(current, field.name)!r}; load it into a "
                    "model without adapters instead"
                )

    requires_grad = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    if current is None:
        with warnings.catch_warnings():  # a narrow SVD gap: the checksums below decide whether the rebuild is right
            warnings.simplefilter("ignore")
            add_adapters(model, config, from_file=True)
    try:
        copy_checked(model, load_file(path)[0], saved, path)
    except LoraxsError:
        if current is None:  # undo: the model goes back to exactly what it was
            remove_adapters(model)
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(requires_grad[name])
        raise
    return model


def copy_checked(model, tensors, saved, path):
    """Check every name, shape and checksum first; copy only when all of them pass."""
    frozen = frozen_tensors(model)
    expected = trained_tensors(model) | (frozen if saved["frozen_stored"] else {})
    if tensors.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
        raise LoraxsError(
            f"{path} does not hold the tensors this {model.adapter_config.method} adapter needs (missing: "
            f"{missing[:3]}, unexpected: {extra[:3]}); was it edited?"
        )
    for name, target in expected.items():
        tensor = tensors[name]
        if tensor.shape != target.shape:
            raise LoraxsError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        if not tensor.is_floating_point():  # copy_ would cast integers or booleans to float without a word
            raise LoraxsError(f"{path}: tensor {name} holds {tensor.dtype}, not floating-point numbers; was it edited?")
        if not torch.isfinite(tensor).all():
            raise LoraxsError(f"{path}: tensor {name} holds NaN or infinite values; it cannot be a trained adapter")
    if not saved["frozen_stored"]:
        checksums = saved.get("frozen_checksums")  # one pair per frozen tensor, in the model's order
        if not isinstance(checksums, list) or len(checksums) != len(frozen):
            raise LoraxsError(f"{path} has no checksum for each frozen tensor; was it edited?")
        for (name, tensor), stored in zip(frozen.items(), checksums):
            scale = 1e-2 * tensor.detach().double().norm().item()  # rounding passes; another subspace does not
            if any(abs(a - b) > scale for a, b in zip(stored, checksum(tensor))):
                raise LoraxsError(
                    f"{path}: the frozen tensor {name} rebuilt here differs from the one the adapter was trained "
                    "with (an SVD whose σ_r and σ_r+1 are nearly equal, or another torch version's random "
                    "numbers). Save the adapter with its frozen tensors, save_adapters(..., frozen=True) or "
                    "train.py --save-frozen, to load it on any machine"
                )
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])
