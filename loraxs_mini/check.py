"""
The exercise checker: python -m loraxs_mini.check 03

Each lesson ends with exercises in lessons/exercises/exNN_*.py: functions to
complete. This checker imports your file and tests each function against the
package (or against mathematics) on fresh random inputs, then prints, per
exercise, passed or not yet, with a hint.

    python -m loraxs_mini.check 03               your exercises for lesson 03
    python -m loraxs_mini.check all              every lesson
    python -m loraxs_mini.check 03 --solutions   the reference solutions (lessons/solutions/)
    python -m loraxs_mini.check 03 --file F.py   any file with the same functions
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .adapters import (
    DEFAULT_TARGETS,
    EVERY_LINEAR,
    LoRALinear,
    LoRAXSLinear,
    VeRALinear,
    VeRAProjections,
    add_adapters,
    parameter_counts,
)
from .data import Example, make_batch
from .errors import ArgumentParser, LoraxsError, friendly_errors
from .evaluate import label_log_likelihoods
from .model import GPT, Block, GPTConfig
from .recipe import learning_rate_at
from .safetensors_file import read_header, save_file

LESSONS = Path(__file__).resolve().parents[1] / "lessons"  # the repository's lessons/: in a clone, not in a wheel
CHECKS = {}  # lesson -> [(function name, check, hint)]


def exercise(lesson, name, hint):
    def register(check):
        CHECKS.setdefault(lesson, []).append((name, check, hint))
        return check

    return register


def close(actual, expected, what, atol=1e-5):
    assert isinstance(actual, torch.Tensor), f"{what} should be a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    error = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert error <= atol, f"{what} is off by up to {error:.2e}"


GPT2_SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # (in, out) of the four layers of a block


# ---------------------------------------------------------------- 01 the model


@exercise("01", "block_parameter_count", "c_attn holds C x 3C weights and 3C biases; a LayerNorm 2C numbers")
def check_block_parameter_count(module):
    for n_embd, n_head in ((32, 2), (768, 12), (1600, 25)):
        with torch.device("meta"):
            expected = sum(p.numel() for p in Block(GPTConfig(n_embd=n_embd, n_head=n_head)).parameters())
        got = module.block_parameter_count(n_embd)
        assert got == expected, f"block_parameter_count({n_embd}) = {got}, expected {expected:,}"


@exercise("01", "causal_attention", "scores = q @ k.transpose(-2, -1) / sqrt(D); fill above the diagonal with -inf")
def check_causal_attention(module):
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)  # (B, H, T, D) each
    close(module.causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), "the output")


@exercise("01", "gelu_tanh", "0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))")
def check_gelu_tanh(module):
    x = torch.linspace(-6, 6, 101)
    close(module.gelu_tanh(x), F.gelu(x, approximate="tanh"), "gelu_tanh(x)")


# ---------------------------------------------------------------- 02 tokens and weights


@exercise("02", "read_safetensors_header", "struct.unpack('<Q', first 8 bytes), then json.loads of the next N bytes")
def check_read_safetensors_header(module):
    import tempfile

    path = Path(tempfile.mkdtemp()) / "check.safetensors"
    save_file({"a": torch.ones(2, 3), "b": torch.zeros(5, dtype=torch.float16)}, path, metadata={"who": "you"})
    header = module.read_safetensors_header(path)
    entries, metadata, _ = read_header(path)
    assert isinstance(header, dict), "return the parsed JSON header as a dict"
    assert header.get("__metadata__") == metadata, "the __metadata__ entry is missing or wrong"
    for name, (_, shape, _, _) in entries.items():
        assert name in header and header[name]["shape"] == list(shape), f"tensor {name!r} missing or wrong"


@exercise("02", "conv1d_to_linear", "Conv1D stores (in, out); nn.Linear wants (out, in): one transpose")
def check_conv1d_to_linear(module):
    weight, bias, x = torch.randn(6, 10), torch.randn(10), torch.randn(4, 6)
    converted = module.conv1d_to_linear(weight)
    close(F.linear(x, converted, bias), x @ weight + bias, "the layer's output")


@exercise("02", "greedy_decode", "loop: logits = model(idx)[0][:, -1]; next = argmax; idx = torch.cat(...)")
def check_greedy_decode(module):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 50257, (2, 5))
    with torch.no_grad():
        got = module.greedy_decode(model, idx, 6)
    expected = model.generate(idx, 6)
    assert isinstance(got, torch.Tensor) and torch.equal(got, expected), "not the greedy continuation"


# ---------------------------------------------------------------- 03 LoRA


@exercise("03", "lora_parameter_count", "A is r x in, B is out x r")
def check_lora_parameter_count(module):
    for in_features, out_features in GPT2_SHAPES:
        for rank in (1, 8, 64):
            layer = LoRALinear(torch.nn.Linear(in_features, out_features, device="meta"), rank, alpha=8)
            expected = layer.A.numel() + layer.B.numel()
            got = module.lora_parameter_count(in_features, out_features, rank)
            assert got == expected, (
                f"lora_parameter_count({in_features}, {out_features}, {rank}) = {got}, expected {expected}"
            )


def random_lora():
    layer = LoRALinear(torch.nn.Linear(12, 20), rank=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()  # B = 0 would hide mistakes in the update
    return layer


@exercise("03", "lora_forward", "F.linear(x, W, b) + (alpha / r) * F.linear(F.linear(x, A), B); r = A.shape[0]")
def check_lora_forward(module):
    layer, x = random_lora(), torch.randn(2, 5, 12)
    with torch.no_grad():
        got = module.lora_forward(x, layer.base.weight, layer.base.bias, layer.A, layer.B, 6.0)
        close(got, layer(x), "lora_forward(...)", atol=1e-4)


@exercise("03", "merged_weight", "W + (alpha / r) * B @ A")
def check_merged_weight(module):
    layer = random_lora()
    with torch.no_grad():
        expected = layer.base.weight + layer.delta_weight()
        close(module.merged_weight(layer.base.weight, layer.A, layer.B, 6.0), expected, "the merged weight")


# ---------------------------------------------------------------- 04 VeRA


@exercise("04", "vera_parameter_count", "only d (r numbers) and b (out numbers) are trained")
def check_vera_parameter_count(module):
    for in_features, out_features in GPT2_SHAPES:
        for rank in (8, 256):
            projections = VeRAProjections(rank, 3072, 3072, seed=0, like=torch.empty(0))
            layer = VeRALinear(torch.nn.Linear(in_features, out_features, device="meta"), projections)
            expected = layer.lambda_d.numel() + layer.lambda_b.numel()
            assert module.vera_parameter_count(out_features, rank) == expected, (
                f"wrong for out={out_features}, r={rank}"
            )


@exercise("04", "shared_pair", "torch.Generator().manual_seed(seed); A first: uniform in ±sqrt(6 / max_in); then B")
def check_shared_pair(module):
    for rank, max_in, max_out, seed in ((4, 10, 12, 0), (8, 768, 3072, 1234)):
        A, B = module.shared_pair(rank, max_in, max_out, seed)
        expected = VeRAProjections(rank, max_in, max_out, seed, like=torch.empty(0))
        close(A, expected.A, "A", atol=0)
        close(B, expected.B, "B", atol=0)


@exercise("04", "vera_delta_weight", "scale B's rows by b and its columns by d: (b[:, None] * B * d[None, :]) @ A")
def check_vera_delta_weight(module):
    projections = VeRAProjections(4, 10, 12, seed=0, like=torch.empty(0))
    layer = VeRALinear(torch.nn.Linear(10, 12), projections)
    with torch.no_grad():
        layer.lambda_b.normal_()
        layer.lambda_d.normal_()
        A, B = layer.shared_matrices()
        close(module.vera_delta_weight(A, B, layer.lambda_d, layer.lambda_b), layer.delta_weight(), "ΔW")


# ---------------------------------------------------------------- 05 SVD and LoRA-XS


def decaying_matrix(out_features=30, in_features=20):
    U, _ = torch.linalg.qr(torch.randn(out_features, in_features))
    V, _ = torch.linalg.qr(torch.randn(in_features, in_features))
    return (U * torch.arange(1, in_features + 1) ** -0.7) @ V.T


@exercise("05", "best_rank_r", "U, S, Vh = torch.linalg.svd(W, full_matrices=False); keep the first r of each")
def check_best_rank_r(module):
    W, r = decaying_matrix(), 4
    approximation = module.best_rank_r(W, r)
    singular_values = np.linalg.svd(W.double().numpy(), compute_uv=False)
    assert approximation.shape == W.shape, f"the approximation should have W's shape {tuple(W.shape)}"
    assert torch.linalg.matrix_rank(approximation, atol=1e-4) <= r, f"the approximation has rank above {r}"
    error = (W - approximation).double().square().sum().item()
    assert math.isclose(error, float(np.sum(singular_values[r:] ** 2)), rel_tol=1e-3), (
        "not the best rank-r approximation"
    )


@exercise("05", "loraxs_init", "B = U[:, :r]; A = diag(S[:r]) @ Vh[:r], i.e. S[:r, None] * Vh[:r]")
def check_loraxs_init(module):
    W, r = decaying_matrix(), 4
    B, A = module.loraxs_init(W, r)
    assert B.shape == (30, r) and A.shape == (r, 20), "B should be out x r and A r x in"
    close(B.T @ B, torch.eye(r), "B's columns should be orthonormal: BᵀB", atol=1e-4)
    base = torch.nn.Linear(20, 30)
    with torch.no_grad():
        base.weight.copy_(W)
    reference = LoRAXSLinear(base, rank=r, alpha=r)
    close(B @ A, reference.B @ reference.A, "B A (the best rank-r approximation of W)", atol=1e-4)


@exercise("05", "loraxs_parameter_count", "R is r x r in every adapted matrix")
def check_loraxs_parameter_count(module):
    for name, rank, targets in (("gpt2", 8, None), ("gpt2-medium", 16, ["attn.c_attn", "mlp.c_fc"])):
        with torch.device("meta"):
            model = add_adapters(GPT(GPTConfig.from_name(name)), "loraxs", rank=rank, targets=targets)
        per_block = len(targets or DEFAULT_TARGETS)  # by default the four linear layers of a block
        got = module.loraxs_parameter_count(model.config.n_layer, per_block, rank)
        assert got == parameter_counts(model)[0], f"{name} r={rank}: got {got}, expected {parameter_counts(model)[0]:,}"


# ---------------------------------------------------------------- 06 fine-tuning


@exercise("06", "completion_targets", "inputs = tokens[:-1]; targets = tokens[1:] with the prompt part set to -100")
def check_completion_targets(module):
    for prompt, completion in (([5, 6, 7], [8, 9]), ([1], [2]), ([3, 4, 5, 6], [7])):
        inputs, targets = module.completion_targets(prompt, completion, 50256)
        expected_inputs, expected_targets = make_batch([Example("", "", prompt, completion)])
        assert list(inputs) == expected_inputs[0].tolist(), f"inputs for {prompt} + {completion} are wrong"
        assert list(targets) == expected_targets[0].tolist(), f"targets for {prompt} + {completion} are wrong"


@exercise(
    "06",
    "learning_rate_at",
    "warm-up: peak * (step + 1) / (steps // 10); after: peak * (steps - step) / (steps - warm-up)",
)
def check_learning_rate_at(module):
    for steps in (10, 150, 333):
        for step in range(steps):
            expected = learning_rate_at(step, steps, 0.5)
            got = module.learning_rate_at(step, steps, 0.5)
            assert math.isclose(got, expected, rel_tol=1e-9), f"step {step} of {steps}: got {got}, expected {expected}"


@exercise("06", "pick_label", "logits[:, label_tokens] gives one column per label; take argmax over dim 1")
def check_pick_label(module):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny")).eval()
    prompts = [torch.randint(0, 50257, (6,)).tolist() for _ in range(16)]
    labels, label_tokens = [" yes", " no", " maybe"], [3763, 645, 3863]
    examples = [Example("", "", prompt, [3763]) for prompt in prompts]
    with torch.no_grad():
        logits = model(torch.tensor(prompts))[0][:, -1]  # (N, V): the next-token scores after each prompt
        expected = label_log_likelihoods(model, examples, labels).argmax(dim=1)
    got = module.pick_label(logits, label_tokens)
    assert torch.equal(torch.as_tensor(got), expected), "not the most likely label for every prompt"


# ---------------------------------------------------------------- 07 merging and exporting


@exercise("07", "merged_linear", "new = nn.Linear(in, out); new.weight = W + adapter.delta_weight(); copy the bias")
def check_merged_linear(module):
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_name("tiny"))
    for method in ("lora", "vera", "loraxs"):
        adapted = add_adapters(GPT(model.config), method, rank=4)
        adapter = adapted.transformer.h[0].mlp.c_fc
        with torch.no_grad():
            for parameter in adapter.parameters():
                if parameter.requires_grad:
                    parameter.normal_(std=0.1)
            x = torch.randn(3, adapter.in_features)
            expected, original_weight = adapter(x), adapter.base.weight.clone()
            merged = module.merged_linear(adapter)
            assert isinstance(merged, torch.nn.Linear), "return a new torch.nn.Linear"
            assert merged is not adapter.base, "build a new layer; the adapter's own base layer must stay as it is"
            close(merged(x), expected, f"the merged {method} layer's output", atol=1e-4)
            assert not adapter.merged and torch.equal(adapter.base.weight, original_weight), "the adapter was changed"


@exercise("07", "adapter_data_bytes", "count the trained numbers per layer (lesson 03-05 formulas) and multiply by 4")
def check_adapter_data_bytes(module):
    for method in ("lora", "vera", "loraxs"):
        for rank in (4, 8):
            with torch.device("meta"):
                model = GPT(GPTConfig.from_name("gpt2"))
            add_adapters(model, method, rank=rank, targets=EVERY_LINEAR)  # the four layers of GPT2_SHAPES
            expected = 4 * parameter_counts(model)[0]
            got = module.adapter_data_bytes(method, rank, GPT2_SHAPES * 12)
            assert got == expected, f"{method} r={rank}: got {got:,} bytes, expected {expected:,}"


# ---------------------------------------------------------------- running the checks


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_file(lesson, solutions):
    if not LESSONS.is_dir():
        raise LoraxsError(
            f"the exercises live in the repository's lessons/ folder, and there is none at {LESSONS}: this copy of "
            "loraxs_mini was installed without the repository. Clone it, `pip install -e .` there, and run the "
            "checker from the clone (or give your file with --file)"
        )
    folder = LESSONS / ("solutions" if solutions else "exercises")
    matches = sorted(folder.glob(f"ex{lesson}_*.py"))
    if not matches:
        raise LoraxsError(f"no ex{lesson}_*.py in {folder}")
    return matches[0]


def run(lesson, path):
    """Run every check of a lesson on the file; returns (passed, total)."""
    print(f"lesson {lesson}: {path}")
    try:
        module = load_module(path)
    except Exception as error:  # a syntax error in the student's file, say
        print(f"  could not import the file: {type(error).__name__}: {error}")
        return 0, len(CHECKS[lesson])
    passed = 0
    for number, (name, check, hint) in enumerate(CHECKS[lesson], start=1):
        try:
            if not hasattr(module, name):
                raise AssertionError(f"the file has no function {name}")
            check(module)
        except NotImplementedError:
            print(f"  [ ] {number}. {name}: not done yet: replace its TODO (the hint comes after a first try)")
        except Exception as error:
            print(f"  [x] {number}. {name}: not yet: {type(error).__name__}: {error}\n        hint: {hint}")
        else:
            print(f"  [ok] {number}. {name}: passed")
            passed += 1
    print(f"  {passed} of {len(CHECKS[lesson])} passed\n")
    return passed, len(CHECKS[lesson])


def main(argv=None):
    parser = ArgumentParser(description="Check your lesson exercises.")
    parser.add_argument("lesson", help=f"the lesson number ({', '.join(CHECKS)}) or 'all'")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--solutions", action="store_true", help="check the reference solutions instead")
    group.add_argument("--file", type=Path, help="check this file instead of lessons/exercises/exNN_*.py")
    args = parser.parse_args(argv)
    lessons = list(CHECKS) if args.lesson == "all" else [args.lesson.zfill(2)]
    if any(lesson not in CHECKS for lesson in lessons):
        sys.exit(f"error: no lesson {args.lesson!r}; the lessons with exercises are {', '.join(CHECKS)}")
    totals = [run(lesson, args.file or find_file(lesson, args.solutions)) for lesson in lessons]
    passed, total = (sum(column) for column in zip(*totals))
    return 0 if passed == total else 1


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
