"""
A new method is one class and one register() call: LoRA-FA, written in the README and nowhere in the package, trains
through train.py, is counted, saved, loaded back with every check, merged, and exported as a LoRA that PEFT loads.
And the refactor that made this possible left fixed-seed runs exactly as they were.
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train
from conftest import ROOT
from loraxs_mini import GPT, GPTConfig, LoraxsError
from loraxs_mini.adapters import (
    METHODS,
    AdaptedLinear,
    AdapterConfig,
    Method,
    Setting,
    adapted_layers,
    adapter_methods,
    add_adapters,
    load_adapters,
    merge_adapters,
    register,
)
from loraxs_mini.adapters.base import new_parameter
from loraxs_mini.export import export_to_peft
from loraxs_mini.pretrained import load_pretrained


def readme_method():
    """The class of the README's "Add a method" block: its code up to its register() call."""
    block = (ROOT / "README.md").read_text().split("## Add a method")[1].split("```python\n")[1].split("```")[0]
    namespace = {}
    exec(block.split("\nregister(")[0], namespace)
    return namespace["LoRAFALinear"]


LoRAFALinear = readme_method()  # LoRA-FA, A frozen, only B trained: six members, as base.py's table asks


class HalfLoRALinear(AdaptedLinear):
    """LoRA with one factor frozen at a random start and the other trained from zero: a setting says which."""

    name = "halflora"
    default_rank = 4
    learning_rates = {4: 1e-2}
    settings = {"frozen": Setting("A", "the factor kept at its random start", ("A", "B"))}

    def __init__(self, base, rank, frozen, generator):
        super().__init__(base, rank)
        shapes = {"A": (rank, self.in_features), "B": (self.out_features, rank)}
        for factor, shape in shapes.items():
            if factor == frozen:
                start = torch.randn(*shape, generator=generator) / math.sqrt(shape[1])
                self.register_buffer(factor, start.to(base.weight.device), persistent=False)
            else:
                setattr(self, factor, new_parameter(torch.zeros(*shape), like=base.weight))

    def update(self, x):
        return F.linear(F.linear(x, self.A), self.B)

    def delta_weight(self):
        return self.B @ self.A


@pytest.fixture
def lorafa():
    register(LoRAFALinear)
    yield LoRAFALinear
    del METHODS[LoRAFALinear.name]  # the registry as it was, for every other test


def test_a_method_registered_from_outside_trains_saves_loads_merges_and_exports(lorafa, hf_tiny, tmp_path):
    _, checkpoint = hf_tiny
    task = tmp_path / "task.jsonl"
    lines = [{"prompt": f"The {w} is", "completion": f" {w}s"} for w in ("cat", "dog", "car", "cup", "pen") * 8]
    task.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    train.main(["--init-from", str(checkpoint), "--data", str(task), "--method", "lorafa", "--steps", "25",
                "--out", str(out)])  # fmt: skip

    result = json.loads((out / "task-lorafa-r4.json").read_text())
    layers = adapted_layers(add_adapters(load_pretrained(checkpoint), "lorafa"))
    assert result["trainable_parameters"] == sum(4 * layer.out_features for layer in layers.values())  # B: out x r
    assert result["learning_rate"] == 1e-2  # its own rate, from its class
    assert result["final_loss"] < result["first_loss"] - 1.0  # it learned: 10.9 -> 8.2 nats here

    # Loaded back with every check: the frozen A rebuilt from the seed and checked, the trained B copied.
    path = out / "task-lorafa-r4.safetensors"
    model = load_adapters(load_pretrained(checkpoint), path).eval()
    assert model.adapter_config == AdapterConfig("lorafa", rank=4)
    assert all(layer.B.abs().max() > 0 for layer in adapted_layers(model).values())
    other = load_pretrained(checkpoint)
    with torch.no_grad():
        other.transformer.wte.weight.mul_(1.01)
    with pytest.raises(LoraxsError, match="trained on other weights"):
        load_adapters(other, path)

    # Merged: the same function, now in W.
    idx = torch.randint(0, 50257, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        adapted = model(idx)[0]
        merged = merge_adapters(load_adapters(load_pretrained(checkpoint), path)).eval()(idx)[0]
    assert torch.allclose(adapted, merged, atol=1e-5)

    # Exported as an exact LoRA that transformers + PEFT load: the same logits.
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    export_to_peft(model, tmp_path / "peft", str(checkpoint))
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    theirs = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(checkpoint), tmp_path / "peft")
    with torch.no_grad():
        assert torch.allclose(theirs.eval()(idx).logits, adapted, atol=1e-4)


def test_a_registered_method_without_a_learning_rate_is_asked_for_one(lorafa, monkeypatch, tmp_path):
    monkeypatch.setattr(LoRAFALinear, "learning_rates", {})
    with pytest.raises(LoraxsError, match="lorafa has no learning rate chosen .* give one with --lr"):
        train.main(["--init-from", "random:tiny", "--task", "plural", "--method", "lorafa", "--out", str(tmp_path)])
    assert not (tmp_path / "plural-lorafa-r4.json").exists()


def test_a_method_s_own_setting_is_a_train_py_flag_checked_stored_and_loaded(tmp_path):
    register(HalfLoRALinear)  # nothing in config.py or cli.py names it or its setting
    try:
        out = tmp_path / "out"
        train.main(
            [
                "--init-from",
                "random:tiny",
                "--task",
                "plural",
                "--method",
                "halflora",
                "--frozen",
                "B",
                "--steps",
                "3",
                "--eval-every",
                "0",
                "--out",
                str(out),
            ]
        )
        result = json.loads((out / "plural-halflora-r4.json").read_text())
        assert result["adapter_config"]["frozen"] == "B" and result["learning_rate"] == 1e-2
        torch.manual_seed(0)  # the run's model, random:tiny, drawn from seed 0
        model = load_adapters(GPT(GPTConfig.from_name("tiny")), out / "plural-halflora-r4.safetensors")
        assert model.adapter_config.frozen == "B"
        layers = adapted_layers(model)
        assert result["trainable_parameters"] == sum(4 * layer.in_features for layer in layers.values())  # A only
        assert all(layer.A.requires_grad and not layer.B.requires_grad for layer in layers.values())
        with pytest.raises(LoraxsError, match="unknown frozen 'C'; choose one of A, B"):
            AdapterConfig("halflora", frozen="C")
        with pytest.raises(LoraxsError, match="--frozen is a setting of halflora; add it to --method"):
            train.main(["--method", "lora", "--frozen", "A", "--init-from", "random:tiny", "--out", str(tmp_path)])
    finally:
        del METHODS[HalfLoRALinear.name]


class Nameless(AdaptedLinear):
    default_rank = 4


class NoUpdate(LoRAFALinear):
    name = "noupdate"
    update = AdaptedLinear.update


class AsksTooMuch(LoRAFALinear):
    name = "askstoomuch"

    def __init__(self, base, rank, alpha, dropout, generator, temperature):
        super().__init__(base, rank, alpha, dropout, generator)


@pytest.mark.parametrize(
    "method, message",
    [
        ("lorafa", "a method is a class derived from AdaptedLinear"),
        (type("OnlyAName", (Method,), {"name": "onlyaname"}), "a method that adds no adapter trains nothing"),
        (type("NumberName", (LoRAFALinear,), {"name": 42}), "its name must be a lower-case word"),
        (Nameless, "its name must be a lower-case word that --method can take"),
        (type("All", (LoRAFALinear,), {"name": "all"}), "its name must be a lower-case word"),
        (type("Comma", (LoRAFALinear,), {"name": "fa,v2"}), "its name must be a lower-case word"),
        (type("Taken", (LoRAFALinear,), {"name": "lora"}), "the name 'lora' is taken by LoRALinear"),
        (type("NoRank", (LoRAFALinear,), {"name": "norank", "default_rank": None}), "default_rank must be a positive"),
        (NoUpdate, "it does not define update"),
        (AsksTooMuch, "its __init__ asks for temperature, which adding adapters cannot give"),
    ],
)
def test_a_class_missing_what_a_method_must_say_is_refused_at_register(method, message):
    before = dict(METHODS)
    with pytest.raises(LoraxsError, match=message):
        register(method)
    assert METHODS == before


def test_no_module_outside_the_adapters_spells_a_method_name(tmp_path):
    sources = [
        ROOT / "train.py",
        *(path for path in (ROOT / "loraxs_mini").rglob("*.py") if "adapters" not in path.parts),
    ]
    for path in sources:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if code.strip().startswith(('"', 'f"')):
                continue  # prose: docstrings and messages
            for name in adapter_methods():  # every registered adapter, LoRA-SB included
                assert f'"{name}"' not in code, f"{path.name}:{number} chooses by the name {name!r}: {line.strip()}"


# Fixed-seed losses (random:tiny, 6 steps at lr 0.05) of every method on both tasks, with each setting a method
# has of its own (LoRA-XS's subspace, TinyLoRA's u and weight tying) and q, k, v adapted apart, as train.py computed
# them before the method contract was made small: a change that moves a single one of them changed behaviour.
PINNED_RUNS = {  # the flags of each command -> the runs it makes
    "full,lora,vera,loraxs,tinylora,lorasb": ["full", "lora-r8", "vera-r256", "loraxs-r8", "tinylora-r2", "lorasb-r8"],
    "loraxs --subspace random --rank 4": ["loraxs-random-r4"],
    "loraxs --subspace bottom --rank 4": ["loraxs-bottom-r4"],
    "tinylora --u 4 --weight-tying 1 --rank 4": ["tinylora-r4-u4-tied"],
    "lora,loraxs --targets attn.c_attn.q,attn.c_attn.k,attn.c_attn.v,mlp.* --rank 2": [
        "lora-r2-qkv-apart",
        "loraxs-r2-qkv-apart",
    ],
}
FIXTURES = Path(__file__).parent / "fixtures"
PINNED_LOSSES = json.loads((FIXTURES / "pinned-losses.json").read_text())


@pytest.mark.parametrize("task", ["sentiment", "plural"])
def test_fixed_seed_runs_give_the_losses_they_gave_before_the_refactor(task, tmp_path):
    for flags, names in PINNED_RUNS.items():
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        train.main(
            [
                "--init-from",
                "random:tiny",
                "--task",
                task,
                "--method",
                *flags.split(),
                "--steps",
                "6",
                "--lr",
                "0.05",
                "--no-save",
                "--eval-every",
                "0",
                "--out",
                str(out),
            ]
        )
        for name in names:
            file = name.removesuffix("-qkv-apart").removesuffix("-u4-tied")
            measured = json.loads((out / f"{task}-{file}.json").read_text())["losses"]
            assert measured == pytest.approx(PINNED_LOSSES[f"{task}-{name}"], rel=1e-6, abs=0), name


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.safetensors")), ids=lambda path: path.stem)
def test_adapter_files_written_before_the_refactor_load_and_give_the_same_logits(path):
    """
    tests/fixtures: one adapter file per method (LoRA-XS with a random subspace and q, k, v apart, TinyLoRA tied too),
    trained 6 steps on plural from random:tiny by the code as it was before the method contract was made small,
    with the logits each gave on a fixed batch (the first 32 of the vocabulary, in logits.json).
    """
    expected = json.loads((FIXTURES / "logits.json").read_text())
    torch.manual_seed(0)  # random:tiny, the model they were trained on
    model = load_adapters(GPT(GPTConfig.from_name("tiny")), path).eval()
    with torch.no_grad():
        logits = model(torch.tensor(expected["inputs"]))[0][:, :, :32]
    assert torch.allclose(logits, torch.tensor(expected["logits"][path.stem]), rtol=0, atol=1e-5)
