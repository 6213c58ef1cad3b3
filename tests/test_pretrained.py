"""Loading and saving checkpoints in Hugging Face's layout, checked against `transformers` itself."""

import json
import shutil

import pytest
import torch

from conftest import SMALL_PRETRAINED, requires_small_pretrained, tiny_gpt
from loraxs_mini import LoraxsError
from loraxs_mini.pretrained import checkpoint_names, config_from_shapes, load_pretrained, save_pretrained
from loraxs_mini.safetensors_file import load_file, save_file


def hf_greedy(hf_model, prompt, n):
    hf_model.generation_config.eos_token_id = None  # never stop early: compare all n tokens
    return hf_model.generate(prompt, max_new_tokens=n, do_sample=False, pad_token_id=0)


def test_loads_a_transformers_checkpoint_and_matches_its_logits_and_greedy_text(hf_tiny):
    hf_model, folder = hf_tiny
    model = load_pretrained(folder).eval()
    assert model.config.n_layer == 2 and model.config.block_size == 96
    prompt = torch.randint(0, 50257, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(prompt)
        theirs = hf_model(prompt).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert torch.equal(model.generate(prompt[:1], 20), hf_greedy(hf_model, prompt[:1], 20))


def test_transformers_loads_what_we_save_and_agrees(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = tiny_gpt(seed=3).eval()
    with torch.no_grad():  # off the default init, so that biases and LayerNorms are exercised
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_pretrained(model, tmp_path / "ours")
    hf_model, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    prompt = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model.eval()(prompt).logits, model(prompt)[0], atol=1e-5, rtol=0)


def hub_layout_tensors(hf_model):
    """What the Hub's own GPT-2 files hold: no prefix, float32, one causal-mask buffer per block."""
    config = hf_model.config
    tensors = {
        name.removeprefix("transformer."): tensor.detach().float().contiguous()
        for name, tensor in hf_model.state_dict().items()
        if name != "lm_head.weight"
    }
    mask = torch.tril(torch.ones(config.n_positions, config.n_positions)).view(
        1, 1, config.n_positions, config.n_positions
    )
    for layer in range(config.n_layer):
        tensors[f"h.{layer}.attn.bias"] = mask.clone()  # the reference writer refuses shared memory
    return tensors


def test_the_hub_file_layout_loads(hf_tiny, tmp_path):
    reference = pytest.importorskip("safetensors.torch")
    hf_model, hf_folder = hf_tiny
    folder = tmp_path / "hub"
    folder.mkdir()
    reference.save_file(hub_layout_tensors(hf_model), folder / "model.safetensors")  # written by the reference library
    shutil.copy(hf_folder / "config.json", folder / "config.json")
    tensors, _ = load_file(folder / "model.safetensors")
    assert "wte.weight" in tensors and "h.0.attn.bias" in tensors and len(tensors) == 4 + 2 * 13

    model = load_pretrained(folder).eval()
    prompt = torch.randint(0, 50257, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(prompt)[0], hf_model(prompt).logits, atol=1e-5, rtol=0)


def test_the_124m_hub_file_holds_160_tensors_in_our_mapping():
    # 148 weights (4 + 12 per block) plus the 12 mask buffers that the loader skips
    assert len(checkpoint_names(12)) + 12 == 160


def test_a_bare_file_takes_its_head_count_from_the_matching_preset():
    on_meta = lambda *shape: torch.empty(shape, device="meta")  # noqa: E731 (only shapes are read)
    tensors = {"wte.weight": on_meta(50257, 1024), "wpe.weight": on_meta(1024, 1024)}
    tensors.update({f"h.{i}.ln_1.weight": on_meta(1024) for i in range(24)})
    config = config_from_shapes(tensors, name="model", source="model.safetensors")
    assert (config.name, config.n_layer, config.n_head, config.n_embd) == ("gpt2-medium", 24, 16, 1024)


def test_a_bare_file_of_unknown_shape_asks_for_a_config(tmp_path):
    model = tiny_gpt()
    save_pretrained(model, tmp_path)
    with pytest.raises(LoraxsError, match="does not say how many attention heads.*config.json"):
        load_pretrained(tmp_path / "model.safetensors")


@pytest.mark.parametrize("damage", ["missing", "unexpected", "wrong_shape"])
def test_damaged_checkpoints_are_refused_clearly(tmp_path, damage):
    save_pretrained(tiny_gpt(), tmp_path)
    tensors, metadata = load_file(tmp_path / "model.safetensors")
    if damage == "missing":
        del tensors["transformer.h.1.mlp.c_fc.bias"]
        message = "missing 1 tensors, e.g. h.1.mlp.c_fc.bias"
    elif damage == "unexpected":
        tensors["transformer.h.0.attn.q_proj.weight"] = torch.zeros(2)
        message = "unexpected 1 tensors, e.g. h.0.attn.q_proj.weight"
    else:
        tensors["transformer.h.0.attn.c_attn.weight"] = torch.zeros(32, 32)
        message = r"'h.0.attn.c_attn.weight' has shape \(32, 32\) stored in x out, but the config needs \(96, 32\)"
    save_file(tensors, tmp_path / "model.safetensors", metadata)
    with pytest.raises(LoraxsError, match=message):
        load_pretrained(tmp_path)


def test_a_non_gpt2_config_is_refused(tmp_path):
    save_pretrained(tiny_gpt(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(LoraxsError, match="model_type is 'llama'; only GPT-2"):
        load_pretrained(tmp_path)


@pytest.mark.parametrize(
    "source, message",
    [("tiny", "has no pretrained weights.*random:tiny"), ("no/such/place", "neither a preset")],
)
def test_bad_sources_are_refused_clearly(source, message):
    with pytest.raises(LoraxsError, match=message):
        load_pretrained(source)


def test_a_folder_without_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(LoraxsError, match="must hold config.json and model.safetensors"):
        load_pretrained(tmp_path)


def test_saving_a_model_with_adapters_asks_to_merge_first(tmp_path):
    from loraxs_mini.adapters import add_adapters

    model = add_adapters(tiny_gpt(), "lora", rank=2)
    with pytest.raises(LoraxsError, match="merge them first"):
        save_pretrained(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


@requires_small_pretrained
def test_the_small_pretrained_checkpoint_matches_transformers():
    transformers = pytest.importorskip("transformers")
    model = load_pretrained(SMALL_PRETRAINED).eval()
    assert model.config.block_size == 256 and model.num_parameters() == 19_249_920
    assert model.lm_head.weight.dtype == torch.float32  # the float16 file is widened for training
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(SMALL_PRETRAINED, dtype=torch.float32).eval()
    from loraxs_mini.tokenizer import encode

    prompt = torch.tensor([encode("The meaning of the word love is")])
    with torch.no_grad():
        ours, theirs = model(prompt)[0], hf_model(prompt).logits
    # Pretrained logits reach |30|; float32 sums in a different order differ by a few 1e-6 there.
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert torch.equal(model.generate(prompt, 20), hf_greedy(hf_model, prompt, 20))


def edit_config(**changes):
    def edit(folder):
        config = json.loads((folder / "config.json").read_text())
        for key, value in changes.items():
            if value is DELETE:
                config.pop(key)
            else:
                config[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


def replace_config(text):
    return lambda folder: (folder / "config.json").write_text(text)


def edit_weights(change):
    def edit(folder):
        tensors, metadata = load_file(folder / "model.safetensors")
        change(tensors)
        save_file(tensors, folder / "model.safetensors", metadata)

    return edit


DELETE = object()


@pytest.mark.parametrize(
    "edit, message",
    [
        (replace_config("[1, 2]"), "must hold a JSON object, not list"),
        (replace_config('"gpt2"'), "must hold a JSON object, not str"),
        (replace_config("null"), "must hold a JSON object, not NoneType"),
        (replace_config("[" * 100_000 + "]" * 100_000), "config.json is nested too deeply"),
        (replace_config('{"n_layer": 2'), "config.json is not valid JSON"),
        (edit_config(n_embd=DELETE), "lacks n_embd"),
        (edit_config(n_layer=DELETE, vocab_size=DELETE), "lacks vocab_size, n_layer"),
        (edit_config(n_layer="2"), "n_layer must be a positive whole number, got '2'"),
        (edit_config(n_layer=2.0), "n_layer must be a positive whole number, got 2.0"),
        (edit_config(n_head=None), "n_head must be a positive whole number, got None"),
        (edit_config(n_head=0), "n_head must be a positive whole number, got 0"),
        (edit_config(n_head=-2), "n_head must be a positive whole number, got -2"),
        (edit_config(n_layer=True), "n_layer must be a positive whole number, got True"),
        (edit_config(vocab_size=10**30), "more than the 20,000,000,000 this project handles"),
        (edit_config(n_layer=10**8), "more than the 20,000,000,000 this project handles"),
        (edit_config(layer_norm_epsilon=-1), "layer_norm_epsilon must be a small positive number"),
        (edit_config(layer_norm_epsilon="abc"), "layer_norm_epsilon must be a small positive number"),
        (edit_weights(lambda t: t.__setitem__("transformer.h.0.ln_1.weight", torch.ones(32, 1, 1))), "3 dimensions"),
        (
            edit_weights(lambda t: t.__setitem__("transformer.wpe.weight", torch.zeros(128, 32, dtype=torch.int64))),
            "holds torch.int64, not floating-point",
        ),  # fmt: skip
        (
            edit_weights(lambda t: t["transformer.h.1.mlp.c_fc.weight"].__setitem__((0, 0), float("nan"))),
            "holds NaN or infinite values",
        ),
        (
            edit_weights(lambda t: t.__setitem__("wte.weight", t["transformer.wte.weight"].clone())),
            "holds both 'transformer.wte.weight' and 'wte.weight'",
        ),  # fmt: skip
    ],
)
def test_a_broken_checkpoint_is_one_clear_error(tmp_path, edit, message):
    save_pretrained(tiny_gpt(), tmp_path / "model")
    edit(tmp_path / "model")
    with pytest.raises(LoraxsError, match=message):
        load_pretrained(tmp_path / "model")


def test_malformed_block_names_in_a_bare_file_do_not_break_reading_its_shape():
    meta = torch.device("meta")
    tensors = {"wte.weight": torch.empty(50257, 768, device=meta), "wpe.weight": torch.empty(1024, 768, device=meta)}
    tensors |= {f"h.{layer}.ln_1.weight": torch.empty(768, device="meta") for layer in range(12)}
    tensors["h.x.foo"] = torch.empty(1, device="meta")  # int("x") used to raise ValueError here
    assert config_from_shapes(tensors, name="bare", source="bare.safetensors").n_layer == 12
    tensors["wte.weight"] = torch.empty(768, device="meta")
    with pytest.raises(LoraxsError, match="must be matrices"):
        config_from_shapes(tensors, name="bare", source="bare.safetensors")
