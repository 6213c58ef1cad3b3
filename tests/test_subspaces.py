"""Which pair LoRA-XS freezes (top, bottom, random or Kaiming-uniform; at W's top scale or their own); LoRA-SB."""

import copy
import json
import math

import pytest
import torch

from conftest import tiny_gpt
from loraxs_mini.adapters import (
    AdapterConfig,
    adapted_layers,
    add_adapters,
    load_adapters,
    merge_adapters,
    parameter_counts,
    save_adapters,
)
from loraxs_mini.errors import LoraxsError
from loraxs_mini.safetensors_file import load_file, read_header, save_file


@pytest.fixture
def batch():
    tokens = torch.randint(0, 1000, (3, 10), generator=torch.Generator().manual_seed(4))
    return tokens, torch.roll(tokens, -1, dims=1)  # (inputs, targets): next-token prediction on random text


def singular_values(B, A):
    return torch.linalg.svdvals(B @ A)[: B.shape[1]]  # the rest are zero: B A has rank r


def test_top_bottom_and_random_differ_only_in_their_directions():
    model = tiny_gpt()
    W = model.transformer.h[1].mlp.c_fc.weight.detach()  # 128 x 32
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    layers = {}
    for subspace in ("top", "bottom", "random"):
        adapted = add_adapters(copy.deepcopy(model), "loraxs", rank=4, subspace=subspace)
        layers[subspace] = adapted.transformer.h[1].mlp.c_fc
    for layer in layers.values():
        # B has orthonormal columns and A = Σ_r V'ᵀ with the top four singular values: the same scale everywhere.
        torch.testing.assert_close(layer.B.T @ layer.B, torch.eye(4), atol=1e-5, rtol=0)
        torch.testing.assert_close(singular_values(layer.B, layer.A), S[:4], atol=1e-4, rtol=1e-4)
    # Projectors onto each subspace's column space, compared with the SVD's own (signs do not matter for these).
    projector = {name: layer.B @ layer.B.T for name, layer in layers.items()}
    torch.testing.assert_close(projector["top"], U[:, :4] @ U[:, :4].T, atol=1e-4, rtol=0)
    torch.testing.assert_close(projector["bottom"], U[:, -4:] @ U[:, -4:].T, atol=1e-4, rtol=0)
    assert torch.linalg.matrix_rank(torch.cat([layers["bottom"].A, Vh[-4:]]), atol=1e-4) == 4  # rows in span(V_bottom)
    assert torch.linalg.matrix_rank(torch.cat([layers["top"].A, Vh[:4]]), atol=1e-4) == 4
    # A random subspace is about as far from both as chance: its overlap with the top r directions is small.
    overlap = (projector["random"] @ U[:, :4]).norm() ** 2 / 4  # 1 if inside span(U_r), about r / out = 0.03 if random
    assert overlap < 0.2


# The layer these tests look at, h[1].mlp.c_fc (128 x 32), is the 7th target (4 per block): a random pair's seed is
# the config's seed + its index among the targets, 6 here.
C_FC_INDEX = 6
PAIRS = [("bottom", "top"), ("bottom", "own"), ("random", "top"), ("random", "own"), ("kaiming-uniform", "top")]


def c_fc(subspace, scale, seed=0):
    adapted = add_adapters(tiny_gpt(), "loraxs", rank=4, subspace=subspace, scale=scale, seed=seed)
    return adapted.transformer.h[1].mlp.c_fc


def test_the_bottom_pair_at_its_own_scale_carries_w_s_four_smallest_singular_values():
    layer = c_fc("bottom", "own")
    U, S, Vh = torch.linalg.svd(layer.base.weight.detach(), full_matrices=False)
    torch.testing.assert_close(layer.B.T @ layer.B, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(singular_values(layer.B, layer.A), S[-4:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.B @ layer.B.T, U[:, -4:] @ U[:, -4:].T, atol=1e-4, rtol=0)
    torch.testing.assert_close(layer.B @ layer.A, U[:, -4:] @ torch.diag(S[-4:]) @ Vh[-4:], atol=1e-5, rtol=0)


def test_the_random_pair_at_its_own_scale_is_the_top_of_a_kaiming_uniform_matrix_s_svd():
    """The paper's code's svd_on_random: K drawn in x out (fan_in = out, bound 1/√out), its top r triplets."""
    layer = c_fc("random", "own")
    out, in_ = layer.base.weight.shape
    bound = 1 / math.sqrt(out)  # kaiming_uniform_ with a = √5: gain √(2 / 6) x √(3 / fan_in) = 1 / √fan_in
    K = torch.empty(in_, out).uniform_(-bound, bound, generator=torch.Generator().manual_seed(C_FC_INDEX)).T
    U, S, Vh = torch.linalg.svd(K, full_matrices=False)  # K: out x in
    torch.testing.assert_close(layer.B.T @ layer.B, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(singular_values(layer.B, layer.A), S[:4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.B @ layer.A, U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], atol=1e-5, rtol=0)


def test_the_kaiming_uniform_pair_fills_each_matrix_within_torch_s_bound_for_the_tensor_built():
    """The paper's code's random: A drawn in x r, B drawn r x out, so fan_in is r for A and out for B."""
    layer = c_fc("kaiming-uniform", "top")
    out, in_ = layer.base.weight.shape
    for frozen, built in ((layer.A, torch.empty(in_, 4)), (layer.B, torch.empty(4, out))):
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(built)  # the tensor as the code builds it
        bound = 1 / math.sqrt(fan_in)
        assert frozen.shape == built.T.shape and frozen.abs().max() <= bound
        assert frozen.abs().max() > 0.8 * bound and abs(frozen.std().item() - bound / math.sqrt(3)) < 0.25 * bound
    assert not torch.allclose(layer.B.T @ layer.B, torch.eye(4), atol=0.1)  # neither orthonormal nor from an SVD
    generator = torch.Generator().manual_seed(C_FC_INDEX)  # and drawn from the layer's seed: A first, then B
    A = torch.empty(in_, 4).uniform_(-1 / 2, 1 / 2, generator=generator).T
    B = torch.empty(4, out).uniform_(-1 / math.sqrt(out), 1 / math.sqrt(out), generator=generator).T
    torch.testing.assert_close(layer.A, A, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.B, B, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("subspace", "scale"), [("top", "own"), ("kaiming-uniform", "own")])
def test_an_own_scale_where_it_means_nothing_is_refused_in_one_line(subspace, scale):
    with pytest.raises(LoraxsError, match="scale 'own' is for the bottom and random subspaces .*; leave it out"):
        AdapterConfig("loraxs", subspace=subspace, scale=scale)


def test_the_default_subspace_is_the_paper_s_top_one_and_old_files_load_as_top(tmp_path):
    model = tiny_gpt()
    assert AdapterConfig("loraxs").subspace == "top"
    default = add_adapters(copy.deepcopy(model), "loraxs", rank=4, seed=3)
    top = add_adapters(copy.deepcopy(model), "loraxs", rank=4, seed=3, subspace="top")
    for a, b in zip(default.state_dict().values(), top.state_dict().values()):
        assert torch.equal(a, b)
    # A file written before the setting existed has no "subspace" in its config: it was trained on the top one.
    path = tmp_path / "old.safetensors"
    save_adapters(default, path)
    tensors, metadata = load_file(path)[0], read_header(path)[1]
    recipe = json.loads(metadata["adapter_config"])
    del recipe["subspace"], recipe["scale"]  # nor a scale, which came later
    metadata.pop("config_checksum")  # nor a checksum of its settings, which came later still
    save_file(tensors, path, {**metadata, "adapter_config": json.dumps(recipe)})
    loaded = load_adapters(copy.deepcopy(model), path)
    assert (loaded.adapter_config.subspace, loaded.adapter_config.scale) == ("top", "top")


@pytest.mark.parametrize(("subspace", "scale"), PAIRS)
def test_a_pair_is_recorded_in_the_file_and_rebuilt_exactly_and_merges(tmp_path, subspace, scale):
    model = tiny_gpt()
    adapted = add_adapters(copy.deepcopy(model), "loraxs", rank=4, seed=2, subspace=subspace, scale=scale)
    with torch.no_grad():
        for parameter in adapted.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)
    save_adapters(adapted, tmp_path / "a.safetensors")
    loaded = load_adapters(copy.deepcopy(model), tmp_path / "a.safetensors")
    assert (loaded.adapter_config.subspace, loaded.adapter_config.scale) == (subspace, scale)
    tokens = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        expected = adapted(tokens)[0]
        assert torch.equal(loaded(tokens)[0], expected)
        assert (expected - model(tokens)[0]).abs().max() > 1e-3  # the adapter changes something
        torch.testing.assert_close(merge_adapters(loaded)(tokens)[0], expected, atol=1e-4, rtol=0)


def test_a_random_subspace_comes_from_the_seed_and_differs_between_layers_and_seeds():
    model = tiny_gpt()

    def B(seed, block):
        adapted = add_adapters(copy.deepcopy(model), "loraxs", rank=4, seed=seed, subspace="random")
        return adapted.transformer.h[block].attn.c_proj.B

    assert torch.equal(B(0, 0), B(0, 0))
    assert not torch.allclose(B(0, 0), B(1, 0), atol=1e-3) and not torch.allclose(B(0, 0), B(0, 1), atol=1e-3)


def test_subspace_is_loraxs_s_alone_and_takes_four_values():
    with pytest.raises(LoraxsError, match="unknown subspace 'middle'; choose one of top, bottom, random, kaiming"):
        AdapterConfig("loraxs", subspace="middle")
    with pytest.raises(LoraxsError, match="subspace is a setting of LoRA-XS; LoRA has none"):
        AdapterConfig("lora", subspace="top")


def test_lorasb_starts_at_the_best_rank_r_approximation_of_the_estimated_first_update(batch):
    """B R A at the start = U_r Σ_r V_rᵀ of ΔW_1 = -η sign(∇_W L), computed here by hand on the plain model."""
    model, rate = tiny_gpt(), 2e-3
    inputs, targets = batch
    weights = {name: module.weight for name, module in model.named_modules() if name.endswith("mlp.c_fc")}
    loss = model(inputs, targets)[1]
    gradients = dict(zip(weights, torch.autograd.grad(loss, list(weights.values()))))
    model.zero_grad(set_to_none=True)
    adapted = add_adapters(copy.deepcopy(model), "lorasb", rank=4, targets=["mlp.c_fc"], first_step=(*batch, rate))
    for name, adapter in adapted_layers(adapted).items():
        update = -rate * gradients[name].sign()  # Adam's first step: -η m / sqrt(v) = -η sign(g)
        U, S, Vh = torch.linalg.svd(update, full_matrices=False)
        best = U[:, :4] @ torch.diag(S[:4]) @ Vh[:4]  # Eckart-Young: the closest rank-4 matrix
        torch.testing.assert_close(adapter.delta_weight(), best, atol=1e-6, rtol=1e-4)
        # Nothing of rank 4 is closer: the error is exactly the singular values left out.
        error = (update - adapter.delta_weight()).norm() ** 2
        torch.testing.assert_close(error, S[4:].square().sum(), atol=1e-8, rtol=1e-3)
        torch.testing.assert_close(adapter.B.T @ adapter.B, torch.eye(4), atol=1e-5, rtol=0)  # orthonormal B, A
        torch.testing.assert_close(adapter.A @ adapter.A.T, torch.eye(4), atol=1e-5, rtol=0)
    assert parameter_counts(adapted)[0] == 4 * 4 * model.config.n_layer  # r² per layer, as LoRA-XS
    assert all(not p.requires_grad for n, p in adapted.named_parameters() if not n.endswith(".R"))


def test_lorasb_refuses_to_start_without_a_first_step_and_leaves_the_model_as_it_was(batch):
    model = tiny_gpt()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(LoraxsError, match="LoRA-SB is built from the first step of full fine-tuning"):
        add_adapters(model, "lorasb", rank=4)
    with pytest.raises(LoraxsError, match="learning rate must be a positive number"):
        add_adapters(model, "lorasb", rank=4, first_step=(*batch, -1.0))
    assert not adapted_layers(model) and not hasattr(model, "adapter_config")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_lorasb_leaves_the_base_weights_frozen_and_without_gradients(batch):
    model = tiny_gpt()
    adapted = add_adapters(model, "lorasb", rank=4, first_step=(*batch, 1e-3))
    for name, parameter in adapted.named_parameters():
        assert parameter.grad is None
        assert parameter.requires_grad == name.endswith(".R")


def test_lorasb_files_store_b_and_a_and_load_exactly_and_merge(tmp_path, batch):
    model = tiny_gpt()
    adapted = add_adapters(copy.deepcopy(model), "lorasb", rank=4, first_step=(*batch, 1e-3))
    path = tmp_path / "sb.safetensors"
    save_adapters(adapted, path)  # without frozen=True: B and A come from data, so they are stored anyway
    stored = load_file(path)[0]
    assert any(name.endswith(".B") for name in stored) and any(name.endswith(".A") for name in stored)
    loaded = load_adapters(copy.deepcopy(model), path)
    tokens = batch[0]
    with torch.no_grad():
        assert torch.equal(loaded(tokens)[0], adapted(tokens)[0])
        assert (adapted(tokens)[0] - model(tokens)[0]).abs().max() > 1e-4  # it starts at the first step, not at W
        torch.testing.assert_close(merge_adapters(loaded)(tokens)[0], adapted(tokens)[0], atol=1e-5, rtol=0)
    # A LoRA-SB file whose B and A were taken out cannot be rebuilt: refused, the model untouched.
    header = read_header(path)[1]
    trained_only = {name: tensor for name, tensor in stored.items() if name.endswith(".R")}
    save_file(trained_only, tmp_path / "edited.safetensors", {**header, "frozen_stored": "false"})
    fresh = copy.deepcopy(model)
    with pytest.raises(LoraxsError, match="lacks the frozen tensors of its LoRA-SB adapter"):
        load_adapters(fresh, tmp_path / "edited.safetensors")
    assert not adapted_layers(fresh)


def test_each_subspace_trains_at_the_rates_measured_for_it():
    from loraxs_mini.adapters import LoRAXSLinear
    from loraxs_mini.recipe import default_learning_rate

    assert len(LoRAXSLinear.subspace_learning_rates) == len(PAIRS)  # every pair but the top has rates of its own
    for subspace, scale in [("top", "top"), *PAIRS]:
        rates = LoRAXSLinear.learning_rates_for(AdapterConfig("loraxs", subspace=subspace, scale=scale))
        own = LoRAXSLinear.subspace_learning_rates.get((subspace, scale))
        assert rates is (LoRAXSLinear.learning_rates if subspace == "top" else own)
        for rank, rate in rates.items():
            config = AdapterConfig("loraxs", rank=rank, subspace=subspace, scale=scale)
            assert default_learning_rate("loraxs", rank, config) == rate
    assert default_learning_rate("loraxs", 8) == LoRAXSLinear.learning_rates[8]  # no config: the paper's subspace


def test_runs_on_another_subspace_write_files_of_their_own():
    from loraxs_mini.cli import run_name

    assert run_name("sentiment", AdapterConfig("loraxs"), False) == "sentiment-loraxs-r8"  # the names as before
    assert run_name("sentiment", AdapterConfig("loraxs", subspace="bottom"), True) == "sentiment-loraxs-bottom-r8-seed0"
    own = AdapterConfig("loraxs", rank=2, subspace="random", scale="own")
    assert run_name("plural", own, False) == "plural-loraxs-random-own-scale-r2"
    kaiming = AdapterConfig("loraxs", subspace="kaiming-uniform")
    assert run_name("plural", kaiming, False) == "plural-loraxs-kaiming-uniform-r8"
    assert run_name("plural", AdapterConfig("lorasb", rank=4), False) == "plural-lorasb-r4"
