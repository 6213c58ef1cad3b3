"""LoRA, VeRA and LoRA-XS: counts, starting behaviour, merging, freezing, the SVD invariants, q/k/v, saving."""

import json

import numpy as np
import pytest
import torch

from conftest import tiny_gpt
from loraxs_mini import GPT, GPTConfig, LoraxsError
from loraxs_mini.adapters import (
    EVERY_LINEAR_SPLIT_QKV,
    AdapterConfig,
    LoRAXSLinear,
    adapted_layers,
    add_adapters,
    load_adapters,
    merge_adapters,
    parameter_counts,
    save_adapters,
    truncated_svd,
)
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.pretrained import save_pretrained

ADAPTERS = ["lora", "vera", "loraxs"]


def on_meta(name):
    with torch.device("meta"):
        return GPT(GPTConfig.from_name(name))


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize(
    "method, rank, targets, expected",
    [
        ("lora", 8, None, 1_179_648),
        ("vera", 8, None, 83_328),
        ("vera", None, None, 95_232),  # VeRA's own rank, 256: (256 + out) per layer
        ("loraxs", 8, None, 3_072),  # 12 blocks x 4 matrices x 8²
        ("loraxs", 8, EVERY_LINEAR_SPLIT_QKV, 4_608),  # q, k, v, attn.c_proj, mlp.c_fc, mlp.c_proj: 12 x 6 x 64
        ("full", None, None, 124_439_808),
        ("none", None, None, 0),
        ("lora", 8, ["attn.c_attn"], 294_912),
        ("vera", 8, ["attn.c_attn"], 27_744),
        ("loraxs", 8, ["attn.c_attn"], 768),
        ("lora", 8, ["c_attn.*"], 12 * 3 * 8 * (768 + 768)),  # three 768 -> 768 thirds per block
    ],
)
def test_exact_trainable_counts_on_gpt2_124m(method, rank, targets, expected):
    model = add_adapters(on_meta("gpt2"), method, rank=rank, targets=targets)
    assert parameter_counts(model) == (expected, 124_439_808)


def layer_shapes(C, split_qkv=False):
    """(in, out) of the linear layers of a GPT-2 block of width C: c_attn whole, or its thirds q, k, v."""
    attention = {f"attn.c_attn.{part}": (C, C) for part in "qkv"} if split_qkv else {"attn.c_attn": (C, 3 * C)}
    return {**attention, "attn.c_proj": (C, C), "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium"])
@pytest.mark.parametrize("rank", [1, 4, 16, 64])
@pytest.mark.parametrize("method", ADAPTERS)
def test_general_formulas(name, rank, method):
    config = GPTConfig.from_name(name)
    shapes = layer_shapes(config.n_embd)
    per_layer = {
        "lora": lambda i, o: rank * (i + o),
        "vera": lambda i, o: rank + o,
        "loraxs": lambda i, o: rank**2,
    }[method]
    expected = config.n_layer * sum(per_layer(i, o) for i, o in shapes.values())
    trainable, _ = parameter_counts(add_adapters(on_meta(name), method, rank=rank))
    assert trainable == expected
    mlp_only = add_adapters(on_meta(name), method, rank=rank, targets=["mlp.*"])
    assert parameter_counts(mlp_only)[0] == config.n_layer * sum(
        per_layer(*shapes[layer]) for layer in ("mlp.c_fc", "mlp.c_proj")
    )


def test_target_patterns_select_fewer_layers():
    model = add_adapters(tiny_gpt(), "lora", rank=2, targets=["transformer.h.1.*", "c_fc"])
    assert sorted(adapted_layers(model)) == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.attn.c_attn",
        "transformer.h.1.attn.c_proj",
        "transformer.h.1.mlp.c_fc",
        "transformer.h.1.mlp.c_proj",
    ]


# ---------------------------------------------------------------- the start


def test_lora_and_vera_start_exactly_at_the_pretrained_model():
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        before, _ = tiny_gpt().eval()(idx)
        for method in ("lora", "vera"):
            after, _ = add_adapters(tiny_gpt(), method, rank=4).eval()(idx)
            assert torch.equal(before, after), method  # B = 0 (LoRA) and b = 0 (VeRA): the update is exactly 0


def test_loraxs_start_obeys_the_bound_implied_by_its_tiny_r():
    # For one layer: |ΔW x| = s |B R A x| <= s |B|_2 |R|_2 |A|_2 |x| = s |R|_2 σ_1 |x|,
    # since B has orthonormal columns (|B|_2 = 1) and A = Σ_r V_rᵀ has |A|_2 = σ_1.
    model = add_adapters(tiny_gpt(), "loraxs", rank=8, alpha=16).eval()
    checked = []

    def check(layer, inputs, _output):
        (x,) = inputs
        change = layer.update(x).norm(dim=-1)
        sigma_1 = torch.linalg.matrix_norm(layer.base.weight, ord=2)
        bound = layer.scaling * torch.linalg.matrix_norm(layer.R, ord=2) * sigma_1 * x.norm(dim=-1)
        assert torch.all(change <= bound * (1 + 1e-5)) and torch.all(change > 0)
        checked.append(layer)

    for layer in adapted_layers(model).values():
        layer.register_forward_hook(check)
    idx = torch.randint(0, 50257, (2, 16))
    with torch.no_grad():
        adapted, _ = model(idx)
    assert len(checked) == 8
    # R ~ N(0, 1e-5²) gives |R|_2 ≈ 1e-5 (2 sqrt(r)): a relative change of about 1e-4 per layer at most,
    # so the logits (about 0.1 here) move by far less than 1e-4.
    base, _ = tiny_gpt().eval()(idx)
    difference = (adapted - base).abs().max().item()
    assert 0 < difference < 1e-4


# ---------------------------------------------------------------- training, merging, freezing


def train_a_little(model, steps=4, lr=3e-2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 50257, (4, 24), generator=generator)
    targets = torch.randint(0, 50257, (4, 24), generator=generator)
    targets[:, :12] = IGNORE_INDEX
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        _, loss = model(idx, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    return model


@pytest.mark.parametrize("method", ADAPTERS)
def test_merged_and_unmerged_agree_after_training(method):
    model = train_a_little(add_adapters(tiny_gpt(), method, rank=4)).eval()
    assert all(layer.delta_weight().abs().max() > 1e-3 for layer in adapted_layers(model).values())
    idx = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        unmerged, _ = model(idx)
        for layer in adapted_layers(model).values():
            layer.merge()
        merged, _ = model(idx)
        for layer in adapted_layers(model).values():
            layer.unmerge()
        unmerged_again, _ = model(idx)
        plain = merge_adapters(model)
        assert not adapted_layers(plain)
        exported, _ = plain(idx)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    torch.testing.assert_close(unmerged_again, unmerged, atol=1e-5, rtol=0)
    torch.testing.assert_close(exported, unmerged, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ADAPTERS)
def test_training_changes_only_the_adapters(method):
    model = add_adapters(tiny_gpt(), method, rank=4)
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    train_a_little(model)
    for name, parameter in model.named_parameters():
        if name in frozen:
            assert torch.equal(parameter, frozen[name]) and parameter.grad is None, name
        else:
            assert not torch.equal(parameter, trainable[name]), name
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    expected = {"lora": {"A", "B"}, "vera": {"lambda_d", "lambda_b"}, "loraxs": {"R"}}[method]
    assert {name.rsplit(".", 1)[1] for name in trainable} == expected


def test_vera_layers_share_one_random_pair():
    model = add_adapters(tiny_gpt(), "vera", rank=4)
    layers = list(adapted_layers(model).values())
    assert all(layer.projections is layers[0].projections for layer in layers)
    assert layers[0].projections.A.shape == (4, 128) and layers[0].projections.B.shape == (128, 4)  # max in / out
    assert not any("projections" in name for name in model.state_dict())  # rebuilt from the seed, never saved


def test_lora_dropout_acts_on_the_update_only_in_training():
    model = train_a_little(add_adapters(tiny_gpt(), "lora", rank=4, dropout=0.5))
    idx = torch.randint(0, 50257, (1, 10))
    with torch.no_grad():
        model.train()
        first, second = model(idx)[0], model(idx)[0]
        model.eval()
        assert not torch.equal(first, second)
        assert torch.equal(model(idx)[0], model(idx)[0])


# ---------------------------------------------------------------- LoRA-XS and the SVD


def pretrained_like(out_features=96, in_features=64, seed=0):
    """A matrix with a decaying spectrum, like pretrained weights (random ones have a flat one)."""
    generator = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(out_features, in_features, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(in_features, in_features, generator=generator))
    S = 3.0 * torch.arange(1, in_features + 1, dtype=torch.float32) ** -0.7
    return (U * S) @ V.T


def test_with_r_identity_loraxs_is_the_best_rank_r_approximation():
    W = pretrained_like()
    layer = LoRAXSLinear(torch.nn.Linear(64, 96), rank=8, alpha=8)
    with torch.no_grad():
        layer.base.weight.copy_(W)
        layer = LoRAXSLinear(layer.base, rank=8, alpha=8)  # SVD of the new weight
        layer.R.copy_(torch.eye(8))
    reference_s = np.linalg.svd(W.double().numpy(), compute_uv=False)  # an independent SVD
    error = (W.double() - layer.delta_weight().double()).square().sum().item()
    assert error == pytest.approx(np.sum(reference_s[8:] ** 2), rel=1e-4)  # Eckart-Young
    torch.testing.assert_close(layer.B.T @ layer.B, torch.eye(8), atol=1e-5, rtol=0)


def test_every_loraxs_update_lives_in_the_top_singular_subspaces():
    W = pretrained_like()
    U, _, Vh = np.linalg.svd(W.double().numpy())
    U_r, V_r = torch.from_numpy(U[:, :8]).float(), torch.from_numpy(Vh[:8].T).float()
    layer = LoRAXSLinear(torch.nn.Linear(64, 96), rank=8, alpha=8)
    with torch.no_grad():
        layer.base.weight.copy_(W)
        layer = LoRAXSLinear(layer.base, rank=8, alpha=8)
        layer.R.copy_(torch.randn(8, 8))  # any R at all
    delta = layer.delta_weight()
    assert delta.norm() > 1
    column_leak = delta - U_r @ (U_r.T @ delta)  # the part of ΔW's columns outside span(U_r)
    row_leak = delta - (delta @ V_r) @ V_r.T  # the part of ΔW's rows outside span(V_r)
    assert column_leak.norm() < 1e-4 * delta.norm() and row_leak.norm() < 1e-4 * delta.norm()


def test_svd_signs_are_fixed():
    U, S, Vh = truncated_svd(pretrained_like(), 8)
    assert torch.all(U.gather(0, U.abs().argmax(0, keepdim=True)) > 0)  # the largest entry of each u_i
    # -W = U S (-V)ᵀ: the rule keeps U and flips V, whatever sign the library returned.
    U_negated, S_negated, Vh_negated = truncated_svd(-pretrained_like(), 8)
    torch.testing.assert_close(U_negated, U)
    torch.testing.assert_close(Vh_negated, -Vh)
    torch.testing.assert_close(S_negated, S)


@pytest.mark.parametrize("shape", [(300, 200), (200, 300)])  # tall and wide
def test_every_svd_method_finds_the_top_subspace_of_a_decaying_spectrum(shape):
    W = pretrained_like(*shape) if shape[0] >= shape[1] else pretrained_like(*shape[::-1]).T
    reference_U, reference_S, reference_Vh = np.linalg.svd(W.double().numpy())  # independent, float64
    U_r, V_r = torch.from_numpy(reference_U[:, :8]).float(), torch.from_numpy(reference_Vh[:8].T).float()
    for method, tolerance in (("svd", 1e-4), ("gram", 1e-4), ("randomized", 1e-2)):
        U, S, Vh = truncated_svd(W, 8, method)
        assert U.shape == (shape[0], 8) and Vh.shape == (8, shape[1])
        torch.testing.assert_close(S, torch.from_numpy(reference_S[:8]).float(), rtol=1e-4, atol=0)
        torch.testing.assert_close(U.T @ U, torch.eye(8), atol=1e-4, rtol=0)
        for found, truth in ((U, U_r), (Vh.T, V_r)):
            sin_theta = torch.linalg.matrix_norm(found - truth @ (truth.T @ found), ord=2)  # largest principal angle
            assert sin_theta < tolerance, method
        torch.testing.assert_close((U * S) @ Vh, (U_r * S) @ V_r.T, atol=1e-3, rtol=0)  # W_r itself


def test_gram_svd_falls_back_on_a_rank_deficient_matrix():
    W = torch.randn(40, 2) @ torch.randn(2, 30)  # rank 2, asked for rank 4
    U, S, Vh = truncated_svd(W, 4, "gram")
    assert torch.isfinite(U).all() and torch.isfinite(Vh).all() and S[2:].abs().max() < 1e-4
    torch.testing.assert_close((U * S) @ Vh, W, atol=1e-4, rtol=0)


def test_loraxs_rank_larger_than_the_layer_is_refused_by_name():
    with pytest.raises(LoraxsError, match=r"transformer.h.0.attn.c_attn: LoRA-XS rank 40 is too large .* rank <= 32"):
        add_adapters(tiny_gpt(), "loraxs", rank=40)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(method="dora"), "unknown method 'dora'"),
        (dict(method="lora", targets=["attn.q_proj"]), "the target 'attn.q_proj' matches no linear layer"),
        (dict(method="lora", rank=0), "rank must be a positive whole number"),
        (dict(method="loraxs", svd="qr"), "unknown SVD method 'qr'"),
    ],
)
def test_bad_adapter_requests_are_clear_errors(kwargs, message):
    with pytest.raises(LoraxsError, match=message):
        add_adapters(tiny_gpt(), kwargs.pop("method"), **kwargs)


@pytest.mark.parametrize("mistake", [{"rank": 40}, {"targets": ["attn.q_proj"]}, {"rank": 0}])
def test_a_refused_request_leaves_the_model_as_it_was(mistake):
    model = tiny_gpt()
    with pytest.raises(LoraxsError):
        add_adapters(model, "loraxs", **{"rank": 4, **mistake})
    assert not hasattr(model, "adapter_config") and not adapted_layers(model)
    assert all(parameter.requires_grad for parameter in model.parameters())
    add_adapters(model, "loraxs", rank=4)  # the corrected call works on the same model
    assert parameter_counts(model)[0] == 2 * 4 * 16


def test_adding_adapters_twice_is_refused():
    model = add_adapters(tiny_gpt(), "lora", rank=2)
    with pytest.raises(LoraxsError, match="already has adapters"):
        add_adapters(model, "loraxs", rank=2)


def test_a_progress_bar_counts_the_layers_and_changes_nothing(capsys):
    quiet = add_adapters(tiny_gpt(), "loraxs", rank=4)
    assert capsys.readouterr().err == ""
    shown = add_adapters(tiny_gpt(), "loraxs", rank=4, progress=True)
    bar = capsys.readouterr().err
    assert "adding loraxs:   0%" in bar and "0/8" in bar  # tiny_gpt: 2 blocks x 4 linear layers
    for name, layer in adapted_layers(quiet).items():
        other = adapted_layers(shown)[name]
        assert torch.equal(layer.A, other.A) and torch.equal(layer.B, other.B) and torch.equal(layer.R, other.R)


# ---------------------------------------------------------------- saving and loading


@pytest.mark.parametrize("method", ADAPTERS + ["full"])
def test_adapter_round_trip_gives_identical_logits(tmp_path, method):
    model = train_a_little(add_adapters(tiny_gpt(), method, rank=4, seed=7)).eval()
    save_adapters(model, tmp_path / "adapter.safetensors")
    fresh = load_adapters(tiny_gpt(), tmp_path / "adapter.safetensors").eval()
    idx = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], model(idx)[0])


def test_only_trained_tensors_are_saved(tmp_path):
    from loraxs_mini.safetensors_file import load_file

    model = add_adapters(tiny_gpt(), "loraxs", rank=4)
    save_adapters(model, tmp_path / "a.safetensors")
    tensors, metadata = load_file(tmp_path / "a.safetensors")
    assert sorted(tensors) == sorted(f"transformer.h.{i}.{layer}.R" for i in range(2) for layer in layer_shapes(1))
    assert AdapterConfig(**json.loads(metadata["adapter_config"])) == model.adapter_config


def test_mismatched_loads_are_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_adapters(train_a_little(add_adapters(tiny_gpt(), "loraxs", rank=4)), path)
    with pytest.raises(LoraxsError, match="trained on custom|trained on tiny with shape"):
        load_adapters(GPT(GPTConfig.from_name("tiny", n_layer=3)), path)
    with pytest.raises(LoraxsError, match="trained on other weights"):
        load_adapters(tiny_gpt(seed=1), path)  # same shape, different weights
    with pytest.raises(LoraxsError, match="rank=4, but this model already has rank=2"):
        load_adapters(add_adapters(tiny_gpt(), "loraxs", rank=2), path)
    with pytest.raises(LoraxsError, match="method='loraxs', but this model already has method='lora'"):
        load_adapters(add_adapters(tiny_gpt(), "lora", rank=4), path)
    with pytest.raises(LoraxsError, match="not an adapter file"):
        save_pretrained(tiny_gpt(), tmp_path / "m")
        load_adapters(tiny_gpt(), tmp_path / "m" / "model.safetensors")


def test_loraxs_adapter_of_gpt2_124m_is_a_few_kilobytes(tmp_path):
    torch.manual_seed(0)
    model = add_adapters(GPT(GPTConfig.from_name("gpt2")), "loraxs", rank=8, svd="randomized")
    size = save_adapters(model, tmp_path / "gpt2-loraxs-r8.safetensors")
    assert 3_072 * 4 < size < 20_000  # 3,072 float32 numbers; the header names 48 tensors, 96 checksums


def rewrite(path, edit):
    """Rewrite an adapter file with its tensors and its metadata (JSON strings) passed through `edit`."""
    from loraxs_mini.safetensors_file import load_file, save_file

    tensors, metadata = load_file(path)
    edit(tensors, metadata)
    save_file(tensors, path, metadata)


def set_metadata(key, value):
    return lambda tensors, metadata: metadata.__setitem__(key, value)


def first_tensor(change):
    def edit(tensors, metadata):
        name = sorted(tensors)[0]
        tensors[name] = change(tensors[name])

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda tensors, metadata: metadata.pop("base_fingerprint"), "not an adapter file"),
        (set_metadata("base_shape", "[1, 2]"), "not an adapter file"),
        (set_metadata("base_shape", '{"n_layer": "2"}'), "not an adapter file"),
        (set_metadata("base_fingerprint", '["a", "b", "c"]'), "not an adapter file"),
        (set_metadata("base_fingerprint", "[1, 2]"), "not an adapter file"),  # an older file's two numbers
        (set_metadata("frozen_stored", '"yes"'), "not an adapter file"),
        (set_metadata("frozen_checksums", "[[1]]"), "not an adapter file"),
        (set_metadata("base_model", "[" * 50_000 + "]" * 50_000), "nested too deeply"),
        (set_metadata("adapter_config", "{not json"), "not valid JSON"),
        (set_metadata("adapter_config", '{"method": "loraxs", "rank": 4}'), "its adapter_config should give alpha"),
        (
            lambda tensors, metadata: metadata.__setitem__(
                "adapter_config", metadata["adapter_config"].replace('"rank": 4', '"rank": "4"')
            ),
            "adapter_config is not valid",
        ),  # fmt: skip
        (first_tensor(lambda tensor: tensor.round().int()), "holds torch.int32, not floating-point"),
        (first_tensor(lambda tensor: tensor.fill_(float("nan"))), "NaN or infinite"),
        (first_tensor(lambda tensor: tensor[:1]), "has shape"),
        (lambda tensors, metadata: tensors.pop(sorted(tensors)[0]), "does not hold the tensors"),
    ],
)
def test_a_tampered_adapter_file_is_refused_and_the_model_stays_bit_identical(tmp_path, edit, message):
    path = tmp_path / "a.safetensors"
    save_adapters(train_a_little(add_adapters(tiny_gpt(), "loraxs", rank=4)), path)
    rewrite(path, edit)
    model = tiny_gpt()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(LoraxsError, match=message):
        load_adapters(model, path)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)
    assert getattr(model, "adapter_config", None) is None and all(p.requires_grad for p in model.parameters())


def test_an_adapter_file_from_before_tinylora_still_loads(tmp_path):
    path = tmp_path / "a.safetensors"
    model = train_a_little(add_adapters(tiny_gpt(), "loraxs", rank=4))
    save_adapters(model, path)

    def as_before(tensors, metadata):  # the AdapterConfig had no u and weight_tying then
        recipe = json.loads(metadata["adapter_config"])
        metadata["adapter_config"] = json.dumps({k: v for k, v in recipe.items() if k not in ("u", "weight_tying")})

    rewrite(path, as_before)
    loaded = load_adapters(tiny_gpt(), path)
    idx = torch.randint(0, 50257, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


@pytest.mark.parametrize("change", ["swap two rows", "swap two layers"])
def test_the_base_fingerprint_sees_reordered_weights(tmp_path, change):
    path = tmp_path / "a.safetensors"
    save_adapters(train_a_little(add_adapters(tiny_gpt(), "lora", rank=4)), path)
    model = tiny_gpt()
    with torch.no_grad():  # the same numbers, in another order: Σ W and Σ W² cannot tell
        if change == "swap two rows":
            weight = model.transformer.h[0].mlp.c_fc.weight
            weight[[0, 1]] = weight[[1, 0]].clone()
        else:
            first, second = model.transformer.h[0].attn.c_proj.weight, model.transformer.h[1].attn.c_proj.weight
            saved = first.clone()
            first.copy_(second)
            second.copy_(saved)
    with pytest.raises(LoraxsError, match="trained on other weights"):
        load_adapters(model, path)
