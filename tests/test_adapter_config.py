"""One AdapterConfig with each method's defaults; float32 adapters on a bf16 base; frozen tensors stored or checked."""

import json
import warnings

import pytest
import torch

from conftest import tiny_gpt
from loraxs_mini import LoraxsError
from loraxs_mini.adapters import (
    EVERY_LINEAR,
    AdapterConfig,
    LoRALinear,
    adapted_layers,
    add_adapters,
    load_adapters,
    save_adapters,
)
from loraxs_mini.adapters import svd as svd_module
from loraxs_mini.safetensors_file import load_file, save_file

# ---------------------------------------------------------------- the config


def test_each_method_gets_its_authors_defaults():
    lora, vera, loraxs = (AdapterConfig(method) for method in ("lora", "vera", "loraxs"))
    assert (lora.rank, lora.alpha, lora.targets) == (8, 8.0, EVERY_LINEAR)  # PEFT's LoraConfig
    assert (vera.rank, vera.alpha, vera.targets) == (256, None, EVERY_LINEAR)  # PEFT's VeraConfig
    assert (loraxs.rank, loraxs.alpha, loraxs.targets) == (8, 8.0, EVERY_LINEAR)  # the paper's math runs: alpha = r
    assert AdapterConfig("loraxs", rank=32).alpha == 32.0  # alpha follows r: alpha / r stays 1
    assert AdapterConfig("lora", rank=32).alpha == 8.0  # LoRA keeps alpha fixed
    assert AdapterConfig("full", rank=8).rank is None  # nothing to rank in full fine-tuning


def test_the_config_travels_whole_through_the_model_and_the_file(tmp_path):
    config = AdapterConfig("lora", rank=2, alpha=3, targets=["mlp.*"], dropout=0.1, seed=5)
    model = add_adapters(tiny_gpt(), config)
    assert model.adapter_config is config
    save_adapters(model, tmp_path / "a.safetensors")
    _, metadata = load_file(tmp_path / "a.safetensors")
    assert AdapterConfig(**json.loads(metadata["adapter_config"])) == config
    assert load_adapters(tiny_gpt(), tmp_path / "a.safetensors").adapter_config == config


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(method="vera", alpha=16), "VeRA has no alpha"),
        (dict(method="lora", rank=2.5), "rank must be a positive whole number, got 2.5"),
        (dict(method="lora", rank=True), "rank must be a positive whole number"),
        (dict(method="loraxs", alpha=-1), "alpha must be a positive number"),
        (dict(method="lora", targets="attn.c_attn"), "targets must be a list"),
        (dict(method="lora", dropout=1.0), "dropout must be a number in"),
        (dict(method="dora"), "unknown method 'dora'"),
    ],
)
def test_bad_settings_are_refused_when_the_config_is_made(settings, message):
    with pytest.raises(LoraxsError, match=message):
        AdapterConfig(**settings)


def test_settings_go_in_the_config_or_as_keywords_not_both():
    with pytest.raises(LoraxsError, match="not both"):
        add_adapters(tiny_gpt(), AdapterConfig("lora"), rank=4)


def test_a_file_whose_config_was_tampered_with_is_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    save_adapters(add_adapters(tiny_gpt(), "lora", rank=2), path)
    tensors, metadata = load_file(path)
    settings = json.loads(metadata["adapter_config"])
    save_file(tensors, path, {**metadata, "adapter_config": json.dumps({**settings, "rank": -2})})
    with pytest.raises(LoraxsError, match="adapter_config is not valid .*rank must be a positive"):
        load_adapters(tiny_gpt(), path)


# ---------------------------------------------------------------- float32 adapters


@pytest.mark.parametrize("method", ["lora", "vera", "loraxs"])
def test_adapters_on_a_bf16_model_are_float32_and_keep_small_steps(method):
    model = add_adapters(tiny_gpt().to(torch.bfloat16), method, rank=4)
    trained = [p for p in model.parameters() if p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert all(b.dtype == torch.float32 for b in model.buffers())
    start = [p.detach().clone() for p in trained]
    optimizer = torch.optim.AdamW(trained, lr=1e-4, weight_decay=0.0)  # Adam's first steps move each entry by ~lr
    idx = torch.randint(0, 50257, (2, 12))
    for _ in range(2):  # two steps: LoRA's A and VeRA's d get a gradient once B (b) is no longer zero
        logits, loss = model(idx, idx)
        assert logits.dtype == torch.bfloat16  # the model computes in its own dtype; each layer rounds back to it
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(p, p0) for p, p0 in zip(trained, start))
    # The same step in bf16 would vanish: next to VeRA's d = 0.1, bf16 numbers are 2^-11 ≈ 4.9e-4 apart.
    bf16_d = torch.tensor(0.1, dtype=torch.bfloat16)
    assert torch.equal(bf16_d + 1e-4, bf16_d)


def test_on_a_bf16_layer_the_update_is_added_in_float32_and_the_sum_rounded_once_as_peft_does():
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(64, 64).to(torch.bfloat16), rank=4, alpha=4.0)
    with torch.no_grad():
        layer.B.normal_(std=0.05)
        x = torch.randn(8, 64, dtype=torch.bfloat16)
        once = (layer.base(x).float() + layer.update(x.float())).to(torch.bfloat16)  # PEFT's LoRA: one rounding
        twice = layer.base(x) + layer.update(x.float()).to(torch.bfloat16)  # the update rounded, then the sum
        assert torch.equal(layer(x), once)
        assert not torch.equal(once, twice)  # the two rules differ here: the test can tell them apart


# ---------------------------------------------------------------- frozen tensors: stored, or checked


def trained(model):
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)
    return model.eval()


@pytest.mark.parametrize("method", ["vera", "loraxs"])
def test_frozen_tensors_stored_in_the_file_load_bit_for_bit(tmp_path, method, monkeypatch):
    model = trained(add_adapters(tiny_gpt(), method, rank=4))
    small, full = tmp_path / "small.safetensors", tmp_path / "full.safetensors"
    save_adapters(model, small)
    save_adapters(model, full, frozen=True)
    stored, _ = load_file(full)
    frozen = {name: buffer for name, buffer in model.named_buffers()}
    assert frozen and all(torch.equal(stored[name], buffer) for name, buffer in frozen.items())
    assert full.stat().st_size > small.stat().st_size
    # On a "machine" whose rebuild differs (here: every frozen tensor perturbed), the stored ones still win.
    real_svd, real_init = svd_module.truncated_svd, torch.Tensor.uniform_
    monkeypatch.setattr("loraxs_mini.adapters.svd.truncated_svd", lambda *a: tuple(-t for t in real_svd(*a)))
    monkeypatch.setattr(torch.Tensor, "uniform_", lambda t, a, b, generator: real_init(t, a, b).mul_(-1))
    fresh = load_adapters(tiny_gpt(), full).eval()
    idx = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        assert torch.equal(fresh(idx)[0], model(idx)[0])
    with pytest.raises(LoraxsError, match="rebuilt here differs .* frozen=True"):
        load_adapters(tiny_gpt(), small)


def test_a_rebuild_that_differs_is_refused_and_leaves_the_model_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_adapters(trained(add_adapters(tiny_gpt(), "loraxs", rank=4)), path)

    real = svd_module.truncated_svd

    def other_subspace(W, rank, method):  # another machine's SVD, where σ_r ≈ σ_r+1: u_r+1 taken for u_r
        U, S, Vh = real(W, rank, method)  # rank = r + 1: one triplet more (see svd.py)
        order = list(range(rank - 2)) + [rank - 1, rank - 2]
        return U[:, order], S[order], Vh[order]

    monkeypatch.setattr("loraxs_mini.adapters.svd.truncated_svd", other_subspace)
    model = tiny_gpt()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(LoraxsError, match="frozen tensor transformer.h.0.attn.c_attn.B rebuilt here differs"):
        load_adapters(model, path)
    assert not adapted_layers(model) and not hasattr(model, "adapter_config")
    assert type(model.transformer.h[0].attn.c_attn) is torch.nn.Linear
    assert all(torch.equal(p, before[name]) and p.requires_grad for name, p in model.named_parameters())
    monkeypatch.undo()
    load_adapters(model, path)  # the same model takes the file once the rebuild matches


def test_rounding_level_differences_in_the_rebuild_still_load(tmp_path, monkeypatch):
    path = tmp_path / "a.safetensors"
    save_adapters(trained(add_adapters(tiny_gpt(), "loraxs", rank=4)), path)
    real = svd_module.truncated_svd
    monkeypatch.setattr(  # another LAPACK: the same subspace up to 1e-5
        "loraxs_mini.adapters.svd.truncated_svd", lambda *a: tuple(t * (1 + 1e-5) for t in real(*a))
    )
    load_adapters(tiny_gpt(), path)


def with_spectrum(layer, singular_values, seed=0):
    """Give an nn.Linear (out x in) the weight U diag(S) Vᵀ, with random orthonormal U and V."""
    generator = torch.Generator().manual_seed(seed)
    k = len(singular_values)
    U, _ = torch.linalg.qr(torch.randn(layer.out_features, k, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(layer.in_features, k, generator=generator))
    with torch.no_grad():
        layer.weight.copy_((U * singular_values) @ V.T)


@pytest.mark.parametrize("gap, warns", [(1.0002, True), (1.5, False)])
def test_a_nearly_repeated_singular_value_warns_at_set_up(gap, warns):
    model = tiny_gpt()
    layer = model.transformer.h[0].mlp.c_proj  # 128 -> 32: 32 singular values
    top = torch.tensor([4.0, 3.8, 3.6, 3.4])
    with_spectrum(layer, torch.cat([top, (3.4 / gap) * torch.linspace(1, 0.2, 28)]))  # σ_4 / σ_5 = gap
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_adapters(model, "loraxs", rank=4, targets=["transformer.h.0.mlp.c_proj"])
    assert adapted_layers(model)["transformer.h.0.mlp.c_proj"].gap == pytest.approx(gap, rel=1e-4)
    assert len(caught) == warns
    if warns:
        assert "transformer.h.0.mlp.c_proj" in str(caught[0].message) and "frozen=True" in str(caught[0].message)
