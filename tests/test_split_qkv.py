"""The fused c_attn as three layers q, k, v: same function, own SVD and own R per third, and the target rules."""

import numpy as np
import pytest
import torch

from conftest import tiny_gpt
from loraxs_mini import LoraxsError
from loraxs_mini.adapters import (
    EVERY_LINEAR_SPLIT_QKV,
    SplitQKV,
    adapted_layers,
    add_adapters,
    find_targets,
    load_adapters,
    merge_adapters,
    remove_adapters,
    save_adapters,
)

C = 32  # the tiny preset's width


def fused_delta(model, block=0):
    """ΔW of block's c_attn as one 3C x C matrix: [ΔW_q; ΔW_k; ΔW_v], stacked like c_attn's rows."""
    split = model.transformer.h[block].attn.c_attn
    return torch.cat([getattr(split, part).delta_weight() for part in "qkv"])


def test_splitting_changes_nothing_the_model_computes():
    model = tiny_gpt().eval()
    idx = torch.randint(0, 50257, (2, 12))
    with torch.no_grad():
        before = model(idx)[0]
        fused = model.transformer.h[1].attn.c_attn
        split = SplitQKV(fused)
        model.transformer.h[1].attn.c_attn = split
        after = model(idx)[0]
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)  # three products instead of one: same sums
    assert split.q.weight.data_ptr() == fused.weight.data_ptr()  # views of the fused weight, not copies
    assert torch.equal(split.v.weight, fused.weight[2 * C :]) and torch.equal(split.k.bias, fused.bias[C : 2 * C])
    assert torch.equal(split.fused().weight, fused.weight) and torch.equal(split.fused().bias, fused.bias)


def test_loraxs_on_q_k_v_gives_each_third_its_own_svd_and_r_and_can_change_the_values():
    model = add_adapters(tiny_gpt(), "loraxs", rank=4, alpha=4, targets=EVERY_LINEAR_SPLIT_QKV)
    W = tiny_gpt().transformer.h[0].attn.c_attn.weight.detach()  # the pretrained fused weight, 3C x C
    thirds = {part: adapted_layers(model)[f"transformer.h.0.attn.c_attn.{part}"] for part in "qkv"}
    assert len({id(layer.R) for layer in thirds.values()}) == 3  # q, k and v each train their own R
    with torch.no_grad():
        for layer in thirds.values():
            layer.R.normal_()  # as if trained
    delta = fused_delta(model)
    value_block = delta[2 * C :]
    assert value_block.norm() > 0.1 * delta.norm()  # the values change as much as anything else
    # ... and only inside span(U_r) of W_v itself, from an independent float64 SVD of W_v:
    U_v = torch.from_numpy(np.linalg.svd(W[2 * C :].double().numpy())[0][:, :4]).float()
    leak = value_block - U_v @ (U_v.T @ value_block)
    assert leak.norm() < 1e-4 * value_block.norm()
    # while the update of one SVD of the stacked matrix lies in the stacked matrix's own top subspace
    fused_model = add_adapters(tiny_gpt(), "loraxs", rank=4, alpha=4, targets=["attn.c_attn"])
    U = torch.from_numpy(np.linalg.svd(W.double().numpy())[0][:, :4]).float()
    fused_layer = adapted_layers(fused_model)["transformer.h.0.attn.c_attn"]
    torch.testing.assert_close(fused_layer.B @ fused_layer.B.T, U @ U.T, atol=1e-4, rtol=0)


def test_merging_puts_one_fused_c_attn_back_with_the_update_inside():
    model = add_adapters(tiny_gpt(), "lora", rank=2, targets=["c_attn.*", "mlp.c_fc"])
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            layer.B.normal_()
    idx = torch.randint(0, 50257, (2, 10))
    with torch.no_grad():
        adapted = model.eval()(idx)[0]
        merged = merge_adapters(model)
        assert type(merged.transformer.h[0].attn.c_attn) is torch.nn.Linear  # fused again, as GPT-2 stores it
        torch.testing.assert_close(merged(idx)[0], adapted, atol=1e-5, rtol=0)
    assert set(dict(merged.named_parameters())) == set(dict(tiny_gpt().named_parameters()))


def test_removing_adapters_gives_back_the_original_model():
    model = add_adapters(tiny_gpt(), "loraxs", rank=4, targets=EVERY_LINEAR_SPLIT_QKV)
    with torch.no_grad():
        for layer in adapted_layers(model).values():
            layer.R.normal_()
    remove_adapters(model)
    assert not adapted_layers(model) and not hasattr(model, "adapter_config")
    original = dict(tiny_gpt().named_parameters())
    assert all(torch.equal(parameter, original[name]) for name, parameter in model.named_parameters())


@pytest.mark.parametrize(
    "patterns, chosen",
    [
        (["attn.*"], ["attn.c_attn", "attn.c_proj"]),  # c_attn itself matches: taken whole
        (["c_attn.*"], ["attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v"]),
        (["c_attn.q", "attn.c_attn.v", "mlp.c_proj"], ["attn.c_attn.q", "attn.c_attn.v", "mlp.c_proj"]),
        (["*"], ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]),
    ],
)
def test_target_patterns_take_c_attn_whole_or_by_thirds(patterns, chosen):
    model = tiny_gpt()
    found = find_targets(model, patterns)
    assert list(found) == [f"transformer.h.{i}.{name}" for i in range(2) for name in chosen]
    assert type(model.transformer.h[0].attn.c_attn) is torch.nn.Linear  # finding changes nothing


def test_c_attn_and_its_thirds_together_are_refused():
    with pytest.raises(LoraxsError, match="both transformer.h.0.attn.c_attn and its third .*c_attn.q"):
        add_adapters(tiny_gpt(), "lora", rank=2, targets=["attn.c_attn", "c_attn.q"])


@pytest.mark.parametrize("method", ["lora", "vera", "loraxs", "tinylora"])
def test_an_adapter_on_q_k_v_saves_and_loads_into_a_fresh_model(method, tmp_path):
    # The base fingerprint is taken in the plain model's layout: q, k and v put back into one c_attn.
    model = add_adapters(tiny_gpt(), method, rank=2, targets=["attn.c_attn.q", "attn.c_attn.v", "mlp.c_fc"])
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)
    save_adapters(model, tmp_path / "a.safetensors")
    loaded = load_adapters(tiny_gpt(), tmp_path / "a.safetensors")
    idx = torch.randint(0, 50257, (2, 8))
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])
