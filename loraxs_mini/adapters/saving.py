"""
Saving what was trained, and loading it back into the right model.

An adapter file is a safetensors file holding the trained tensors (LoRA's A and B, VeRA's d and b, LoRA-XS's R;
every weight for "full") and, as JSON metadata, the AdapterConfig, the base model's name and shape, and what
loading checks (checks.py): a fingerprint of the base weights, a checksum of each frozen tensor and one of the
settings.

The frozen tensors are not stored but rebuilt when the file is loaded: LoRA-XS's B and A from the SVD of the base
weights, VeRA's pair from its seed. That keeps files tiny (19 KB for LoRA-XS on GPT-2). `save_adapters(...,
frozen=True)` stores them too, and the file then loads bit for bit on any machine; LoRA-SB's B and A come from
training data, which the file does not hold, so its files always store them.
"""

import json
import warnings
from pathlib import Path

import torch

from ..errors import LoraxsError
from ..safetensors_file import load_file, save_file
from .base import Build
from .checks import (
    SHAPE_KEYS,
    base_fingerprint,
    check_base,
    check_tensors,
    checksum,
    read_adapter_config,
    text_checksum,
)
from .inject import adapted_layers, place_adapters, remove_adapters


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
    settings = json.dumps(config.to_dict())
    metadata = {
        "adapter_config": settings,
        "config_checksum": json.dumps(text_checksum(settings)),  # an edited setting is named as such on loading
        "base_model": json.dumps(model.config.name),
        "base_shape": json.dumps({key: getattr(model.config, key) for key in SHAPE_KEYS}),
        "base_fingerprint": json.dumps(base_fingerprint(model)),
        "frozen_stored": json.dumps(frozen),
    }
    metadata["frozen_checksums"] = json.dumps([checksum(tensor) for tensor in frozen_tensors(model).values()])
    if frozen:
        tensors |= frozen_tensors(model)
    save_file(tensors, path, metadata)
    return Path(path).stat().st_size


def load_adapters(model, path):
    """
    Load an adapter file into `model`: adds the adapters its AdapterConfig
    describes if the model has none yet, checks, then copies the tensors in.
    Refuses a base model of another shape or other weights, a model that
    already carries a different adapter, and frozen tensors that rebuild
    differently here. A refused load leaves the model exactly as it was.
    """
    config, saved = read_adapter_config(path)
    check_base(model, config, saved, path)
    fresh = getattr(model, "adapter_config", None) is None
    requires_grad = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    if fresh:
        with warnings.catch_warnings():  # a narrow SVD gap: the checksums decide whether the rebuild is right
            warnings.simplefilter("ignore")
            place_adapters(model, config, Build())  # no first step: LoRA-SB's B and A come from the file
    try:
        frozen = frozen_tensors(model)
        expected = trained_tensors(model) | (frozen if saved["frozen_stored"] else {})
        tensors = load_file(path)[0]
        check_tensors(model, tensors, expected, frozen, saved, path)
    except LoraxsError:
        if fresh:  # undo: the model goes back to exactly what it was
            remove_adapters(model)
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(requires_grad[name])
        raise
    with torch.no_grad():
        for name, target in expected.items():
            target.copy_(tensors[name])
    return model


def trained_tensors(model):
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def frozen_tensors(model):
    """The adapters' frozen tensors (LoRA-XS's B and A, VeRA's shared pair, once): their buffers."""
    prefixes = tuple(f"{name}." for name in adapted_layers(model))
    return {name: buffer for name, buffer in model.named_buffers() if name.startswith(prefixes)}
