"""
Saving only what was trained, and loading it back into the right model.

An adapter file is a safetensors file holding the trainable tensors alone
(LoRA's A and B, VeRA's d and b, LoRA-XS's R) plus metadata that says how to
rebuild everything else: the method, rank, alpha, targets and seed, and the
base model's name and shape. Frozen parts are never stored: VeRA's random pair
comes back from its seed, LoRA-XS's B and A from the SVD of the base weights.

That is also why loading checks the base model, not just its shape: LoRA-XS's
R only means something together with the B and A of the weights it was
trained on. A fingerprint of those weights (two float64 sums per adapted
matrix) catches an adapter loaded onto different weights of the same shape.
"""

import json
from pathlib import Path

import torch

from ..errors import LoraxsError
from ..safetensors_file import load_file, read_header, save_file
from .inject import add_adapters, find_targets

SHAPE_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


def base_fingerprint(model, targets):
    """Σ W and Σ W² of each target layer's frozen weight, in float64."""
    sums = []
    for layer in find_targets(model, targets).values():
        weight = getattr(layer, "base", layer).weight.detach().double()
        sums += [weight.sum().item(), weight.square().sum().item()]
    return sums


def trainable_tensors(model):
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def save_adapters(model, path):
    """Write the trained tensors and the recipe to rebuild the rest. Returns the file size in bytes."""
    config = getattr(model, "adapter_config", None)
    if config is None or config["method"] == "none":
        raise LoraxsError("this model has no adapters to save; add them with add_adapters(model, method, rank)")
    metadata = {key: json.dumps(value) for key, value in config.items()}
    metadata["base_model"] = json.dumps(model.config.name)
    metadata["base_shape"] = json.dumps({key: getattr(model.config, key) for key in SHAPE_KEYS})
    metadata["base_fingerprint"] = json.dumps(base_fingerprint(model, config["targets"]))
    save_file(trainable_tensors(model), path, metadata)
    return Path(path).stat().st_size


def read_adapter_config(path):
    """The adapter's recipe (method, rank, alpha, targets, ...) and its base model's name, shape, fingerprint."""
    _, metadata, _ = read_header(path)
    try:
        saved = {key: json.loads(value) for key, value in metadata.items()}
    except ValueError:
        saved = {}
    if "method" not in saved or "base_shape" not in saved:
        raise LoraxsError(f"{path} is not an adapter file written by loraxs-mini (no method or base shape in it)")
    return saved


def load_adapters(model, path):
    """
    Load an adapter file into `model`: adds the adapters described in the
    file if the model has none yet, then copies the trained tensors in.
    Refuses a base model of another shape or other weights, and a model that
    already carries a different method or rank.
    """
    saved = read_adapter_config(path)
    shape = {key: getattr(model.config, key) for key in SHAPE_KEYS}
    if saved["base_shape"] != shape:
        raise LoraxsError(
            f"{path} was trained on {saved['base_model']} with shape {saved['base_shape']}, but this model "
            f"({model.config.name}) has shape {shape}; load it into the model it was trained on"
        )
    recipe = {key: saved[key] for key in ("method", "rank", "alpha", "targets", "dropout", "seed", "svd")}
    # A full fine-tune stores every weight, so any base of the right shape will do; adapters need theirs.
    if recipe["method"] != "full":
        fingerprint = base_fingerprint(model, recipe["targets"])
        expected = torch.tensor(saved["base_fingerprint"], dtype=torch.float64)
        if not torch.allclose(torch.tensor(fingerprint, dtype=torch.float64), expected, rtol=1e-6, atol=1e-6):
            raise LoraxsError(
                f"{path} was trained on other weights than this model's (base {saved['base_model']!r}, same "
                "shape but different values); load it into the base model it was trained on"
            )
    current = getattr(model, "adapter_config", None)
    if current is None:
        add_adapters(model, **recipe)
    else:
        for key in ("method", "rank", "targets", "svd"):
            if current[key] != recipe[key]:
                raise LoraxsError(
                    f"{path} holds a {recipe['method']} adapter with {key}={recipe[key]!r}, but this model "
                    f"already has {key}={current[key]!r}; load it into a model without adapters instead"
                )
    tensors, _ = load_file(path)
    parameters = trainable_tensors(model)
    if tensors.keys() != parameters.keys():
        raise LoraxsError(f"{path} does not hold the tensors this {recipe['method']} adapter needs; was it edited?")
    with torch.no_grad():
        for name, parameter in parameters.items():
            if tensors[name].shape != parameter.shape:
                raise LoraxsError(
                    f"{path}: tensor {name} has shape {tuple(tensors[name].shape)}, expected {tuple(parameter.shape)}"
                )
            parameter.copy_(tensors[name])
    return model
