"""
What an adapter file is checked for, before it touches a model (saving.py reads and writes the file).

The frozen tensors (LoRA-XS's B and A, VeRA's random pair) are not stored: loading rebuilds them, from the SVD of
the base weights or from a seed. A rebuild can come out differently: where σ_r ≈ σ_{r+1} another machine's SVD
may find another top-r subspace, and another random-number implementation another pair. So the file keeps a
checksum of each frozen tensor, and loading refuses a rebuild that does not match.

The base model is checked too, not just its shape: LoRA-XS's R only means something with the B and A of the
weights it was trained on. A fingerprint of the base weights catches an adapter loaded onto other weights of the
same shape: Σ W² over all of them, and two sums of random projections uᵀ W v with fresh u and v for each weight,
so that swapped rows or swapped layers change it too.

And every metadata field's type, the whole AdapterConfig, each tensor's name, shape, type and finiteness: a
hand-edited or broken file is refused in one line, and a refused load leaves the model exactly as it was.
"""

import hashlib
import math

import torch

from ..errors import LoraxsError
from ..safetensors_file import parse_json, read_header
from .config import AdapterConfig
from .inject import adapter_parameters
from .svd import NARROW_GAP

SHAPE_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
METADATA_KEYS = ("adapter_config", "base_model", "base_shape", "base_fingerprint", "frozen_stored")


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


def text_checksum(text):
    """The first 16 hex digits of the text's SHA-256: enough to tell an edited setting from the one saved."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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
    recipe = saved["adapter_config"]
    # A missing shared setting would silently take today's default, not the trained value. A method's own setting
    # may be missing (files written before it existed: trained with its default); files written before the
    # settings became each method's own list every method's, None where not its own: AdapterConfig ignores those.
    if not set(AdapterConfig.COMMON) <= recipe.keys():
        raise LoraxsError(
            f"{path}: its adapter_config should give {', '.join(sorted(AdapterConfig.COMMON))}; it gives "
            f"{', '.join(sorted(recipe)) or 'none'}. Was it edited?"
        )
    try:
        config = AdapterConfig(**recipe)
    except (TypeError, LoraxsError) as error:
        raise LoraxsError(f"{path}: its adapter_config is not valid ({error})") from None
    if "config_checksum" in saved and saved["config_checksum"] != text_checksum(metadata["adapter_config"]):
        raise LoraxsError(
            f"{path}: its adapter_config was edited after the file was saved (its checksum no longer matches); the "
            "trained tensors belong to the settings they were trained with. Load the file as it was saved"
        )  # files written before the checksum existed have none: nothing to compare
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
        and isinstance(saved.get("config_checksum", ""), str)
        and isinstance(checksums, list)
        and all(isinstance(pair, list) and len(pair) == 2 and all(number(x) for x in pair) for pair in checksums)
    )


def check_base(model, config, saved, path):
    """The model is the one the file was trained on: its shape, its weights (fingerprint), its adapters if any."""
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
        raise LoraxsError(
            f"{path} lacks the frozen tensors of its {config.method_class.display_name} adapter, which "
            "cannot be rebuilt from the base model; was it edited?"
        )
    current = getattr(model, "adapter_config", None)
    if current is not None:
        ours, theirs = current.to_dict(), config.to_dict()
        for name in {**ours, **theirs}:  # the shared settings first; dropout acts only in training: any may load
            if name != "dropout" and ours.get(name) != theirs.get(name):
                raise LoraxsError(
                    f"{path} holds a {config.method} adapter with {name}={theirs.get(name)!r}, but this model "
                    f"already has {name}={ours.get(name)!r}; load it into a model without adapters instead"
                )


def check_tensors(model, tensors, expected, frozen, saved, path):
    """
    Every tensor the adapter needs, of its shape, floating-point and finite; every frozen tensor as it was saved:
    stored ones to the checksum's precision and as their method requires (check_frozen), rebuilt ones within
    rounding of the checksum.
    """
    method = model.adapter_config.method_class
    if tensors.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
        raise LoraxsError(
            f"{path} does not hold the tensors this {method.name} adapter needs (missing: {missing[:3]}, unexpected: "
            f"{extra[:3]}); was it edited?"
        )
    for name, target in expected.items():
        tensor = tensors[name]
        if tensor.shape != target.shape:
            raise LoraxsError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        if not tensor.is_floating_point():  # copy_ would cast integers or booleans to float without a word
            raise LoraxsError(f"{path}: tensor {name} holds {tensor.dtype}, not floating-point numbers; was it edited?")
        if not torch.isfinite(tensor).all():
            raise LoraxsError(f"{path}: tensor {name} holds NaN or infinite values; it cannot be a trained adapter")
    checksums = saved.get("frozen_checksums")  # one pair per frozen tensor, in the model's order
    stored = saved["frozen_stored"]
    if checksums is None and stored:
        checksums = [None] * len(frozen)  # files written before stored tensors had checksums: none to compare
    if not isinstance(checksums, list) or len(checksums) != len(frozen):
        raise LoraxsError(f"{path} has no checksum for each frozen tensor; was it edited?")
    layers = {name: module for name, module in model.named_modules()}
    for (name, tensor), saved_sums in zip(frozen.items(), checksums):
        if stored:  # the file's own tensor: exactly what was saved, to the checksum's 6 digits
            tensor, tolerance = tensors[name], 1e-5
        else:  # rebuilt here: the same up to rounding, not another subspace or another random draw
            tolerance = 1e-2
        scale = tolerance * tensor.detach().double().norm().item()
        if saved_sums is not None and any(abs(a - b) > scale for a, b in zip(saved_sums, checksum(tensor))):
            if stored:
                raise LoraxsError(
                    f"{path}: the frozen tensor {name} is not the one the file was saved with (its "
                    "checksum no longer matches): the file was edited or damaged"
                )
            layer = layers.get(name.rpartition(".")[0])
            cause = (
                "this layer's r-th and (r+1)-th singular values are nearly equal, so rounding picks the direction"
                if getattr(layer, "gap", math.inf) < NARROW_GAP
                else "this machine's SVD or random numbers differ from the ones it was saved with (another torch?)"
            )
            raise LoraxsError(
                f"{path}: the frozen tensor {name} rebuilt here differs from the one the adapter was trained with: "
                f"{cause}. Save the adapter with its frozen tensors, save_adapters(..., frozen=True) or train.py "
                "--save-frozen, to load it on any machine"
            )
    if stored:
        by_layer = {}
        for name in frozen:
            owner, _, short = name.rpartition(".")
            by_layer.setdefault(owner, {})[short] = tensors[name]
        for owner, own in by_layer.items():
            problem = method.check_frozen(own)
            if problem:
                raise LoraxsError(
                    f"{path}: the frozen tensors of {owner} are not what {method.display_name} makes: "
                    f"{problem}; was the file edited?"
                )
