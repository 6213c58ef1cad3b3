"""
The exercise checker: python -m loraxs_mini.check 03

Each lesson ends with exercises in lessons/exercises/exNN_*.py: functions to
complete. The last of each lesson is an experiment: a function that measures
something (what one token reaches, what a rank-1 update can fit, how a file
grows with the rank), checked twice: against the checker's own measurement, and
on the consequence the lesson predicts. The checker imports your file, runs each
function on fresh inputs and prints, per exercise, passed or not yet; after a
wrong attempt, a hint that points the way without giving the code.

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
    ADAPTER_METHODS,
    METHODS,
    LoRALinear,
    LoRAXSLinear,
    VeRALinear,
    VeRAProjections,
    add_adapters,
    parameter_counts,
    save_adapters,
)
from .data import Example, make_batch
from .errors import ArgumentParser, LoraxsError, friendly_errors
from .evaluate import label_log_likelihoods
from .model import GPT, GPTConfig

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


def tiny_model():
    """The tiny preset (2 blocks, width 32), drawn from seed 0: the same model in every check, in seconds."""
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("tiny"))


# ---------------------------------------------------------------- 01 the model


@exercise("01", "causal_attention", "token t may look only at tokens 0..t: give the other scores a value that softmax "
          "turns into a weight of exactly 0, and remember the scale 1 / sqrt(D)")  # fmt: skip
def check_causal_attention(module):
    q, k, v = torch.randn(3, 2, 4, 7, 8).unbind(0)  # (B, H, T, D) each
    close(module.causal_attention(q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), "the output")


@exercise("01", "gelu_tanh", "write the docstring's formula term by term; at x = 0 it gives 0, at x = 3 almost 3, "
          "at x = -3 almost 0")  # fmt: skip
def check_gelu_tanh(module):
    x = torch.linspace(-6, 6, 101)
    close(module.gelu_tanh(x), F.gelu(x, approximate="tanh"), "gelu_tanh(x)")


@exercise("01", "position_sensitivity", "run the model on idx and on a copy with one column changed; compare the "
          "two logits tensors position by position, reducing over the batch and the vocabulary")  # fmt: skip
def check_position_sensitivity(module):
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (2, 12))
    for position in (0, 5, 11):
        changed = idx.clone()
        changed[:, position] = (changed[:, position] + 1) % 50257
        with torch.no_grad():
            expected = (model(changed)[0] - model(idx)[0]).abs().amax(dim=(0, 2))
        measured = module.position_sensitivity(model, idx.clone(), position)
        close(measured, expected, f"the changes for position {position}")
        # What it measures: a token reaches itself and the positions after it, never the ones before.
        assert torch.all(measured[:position] == 0) and torch.all(measured[position:] > 0)


# ---------------------------------------------------------------- 02 tokens and weights


@exercise("02", "conv1d_to_linear", "compare the shapes: which dimension of Conv1D's weight is the input, and which of "
          "nn.Linear's?")  # fmt: skip
def check_conv1d_to_linear(module):
    weight, bias, x = torch.randn(6, 10), torch.randn(10), torch.randn(4, 6)
    converted = module.conv1d_to_linear(weight)
    close(F.linear(x, converted, bias), x @ weight + bias, "the layer's output")


@exercise("02", "greedy_decode", "one new token per turn of a loop; only the last position's logits say what comes "
          "next")  # fmt: skip
def check_greedy_decode(module):
    model = tiny_model().eval()
    idx = torch.randint(0, 50257, (2, 5))
    with torch.no_grad():
        got = module.greedy_decode(model, idx, 6)
    expected = model.generate(idx, 6)
    assert isinstance(got, torch.Tensor) and torch.equal(got, expected), "not the greedy continuation"


@exercise("02", "next_token_entropy", "divide the logits by the temperature before the softmax; the entropy is "
          "-Σ p log p over the last dimension, and log_softmax gives log p without log(0)")  # fmt: skip
def check_next_token_entropy(module):
    torch.manual_seed(0)
    logits = 4 * torch.randn(3, 50257)
    logits[0, 7] = 1e4  # one row with a certain winner: p of everything else underflows to 0
    entropies = []
    for temperature in (0.5, 1.0, 2.0):
        expected = torch.distributions.Categorical(logits=logits / temperature).entropy()
        measured = module.next_token_entropy(logits, temperature)
        close(measured, expected, f"the entropy at temperature {temperature}", atol=1e-3)
        entropies.append(measured)
    # What it measures: hotter sampling is less sure, up to log V (uniform); greedy is the limit of no doubt.
    assert torch.all(entropies[0][1:] < entropies[1][1:]) and torch.all(entropies[1][1:] < entropies[2][1:])
    assert entropies[2].max() <= math.log(50257) and entropies[0][0] < 1e-3


# ---------------------------------------------------------------- 03 LoRA


def random_lora():
    layer = LoRALinear(torch.nn.Linear(12, 20), rank=3, alpha=6)
    with torch.no_grad():
        layer.B.normal_()  # B = 0 would hide mistakes in the update
    return layer


@exercise("03", "lora_forward", "the base layer's output plus the low-rank path; x meets A first; r is one of A's "
          "dimensions")  # fmt: skip
def check_lora_forward(module):
    layer, x = random_lora(), torch.randn(2, 5, 12)
    with torch.no_grad():
        got = module.lora_forward(x, layer.base.weight, layer.base.bias, layer.A, layer.B, 6.0)
        close(got, layer(x), "lora_forward(...)", atol=1e-4)


@exercise("03", "merged_weight", "the update the LoRA layer adds, written as one out x in matrix, scaled as in "
          "lora_forward")  # fmt: skip
def check_merged_weight(module):
    layer = random_lora()
    with torch.no_grad():
        expected = layer.base.weight + layer.delta_weight()
        close(module.merged_weight(layer.base.weight, layer.A, layer.B, 6.0), expected, "the merged weight")


@exercise("03", "lora_fit_error", "make A and B parameters (B at zero, as in LoRA) and let Adam shrink the "
          "squared distance between B @ A and the target; measure the relative error at the end")  # fmt: skip
def check_lora_fit_error(module):
    generator = torch.Generator().manual_seed(3)
    target = torch.randn(20, 2, generator=generator) @ torch.randn(2, 12, generator=generator)  # rank 2
    singular_values = torch.linalg.svdvals(target)
    best_rank_1 = (singular_values[1] / singular_values.norm()).item()  # Eckart-Young: no rank-1 matrix does better
    one, two = module.lora_fit_error(target, 1), module.lora_fit_error(target, 2)
    assert isinstance(one, float) and isinstance(two, float), "return the relative errors as floats"
    assert one >= best_rank_1 - 1e-3, f"rank 1 reached {one:.3f}, below the best possible {best_rank_1:.3f}"
    assert one <= best_rank_1 + 0.02, f"rank 1 stopped at {one:.3f}; training should reach {best_rank_1:.3f}"
    assert two < 1e-2, f"rank 2 stopped at {two:.3f}; a rank-2 target is within its reach (more steps?)"


# ---------------------------------------------------------------- 04 VeRA


@exercise("04", "shared_pair", "one generator, seeded once, draws both matrices: their order and each one's fan_in "
          "matter (lesson 04 shows VeRAProjections)")  # fmt: skip
def check_shared_pair(module):
    for rank, max_in, max_out, seed in ((4, 10, 12, 0), (8, 768, 3072, 1234)):
        A, B = module.shared_pair(rank, max_in, max_out, seed)
        expected = VeRAProjections(rank, max_in, max_out, seed, like=torch.empty(0))
        close(A, expected.A, "A", atol=0)
        close(B, expected.B, "B", atol=0)


@exercise("04", "vera_delta_weight", "b scales the rows of the update, d the rank dimension in the middle; "
          "broadcasting does both without building a diagonal matrix")  # fmt: skip
def check_vera_delta_weight(module):
    projections = VeRAProjections(4, 10, 12, seed=0, like=torch.empty(0))
    layer = VeRALinear(torch.nn.Linear(10, 12), projections)
    with torch.no_grad():
        layer.lambda_b.normal_()
        layer.lambda_d.normal_()
        A, B = layer.shared_matrices()
        close(module.vera_delta_weight(A, B, layer.lambda_d, layer.lambda_b), layer.delta_weight(), "ΔW")


@exercise("04", "vera_fit_error", "with b = 1 the update is a sum of r fixed rank-1 matrices weighted by d: "
          "make each one a column, and least squares finds the best weights")  # fmt: skip
def check_vera_fit_error(module):
    generator = torch.Generator().manual_seed(4)
    target = torch.randn(24, 4, generator=generator) @ torch.randn(4, 24, generator=generator)
    errors = {}
    for rank in (8, 256):
        projections = VeRAProjections(rank, 24, 24, seed=0, like=target)
        columns = torch.stack([torch.outer(projections.B[:, i], projections.A[i]).flatten() for i in range(rank)], 1)
        best = torch.linalg.lstsq(columns, target.flatten()[:, None]).solution
        expected = ((columns @ best).flatten() - target.flatten()).norm().item() / target.norm().item()
        errors[rank] = module.vera_fit_error(target, rank, seed=0)
        assert math.isclose(errors[rank], expected, abs_tol=1e-3), f"r={rank}: {errors[rank]:.4f}, not {expected:.4f}"
    # What it measures: r fixed random directions out of 24 x 24 = 576; the rank buys the expressiveness.
    assert errors[256] < errors[8] - 0.1


# ---------------------------------------------------------------- 05 SVD and LoRA-XS


def decaying_matrix(out_features=30, in_features=20):
    U, _ = torch.linalg.qr(torch.randn(out_features, in_features))
    V, _ = torch.linalg.qr(torch.randn(in_features, in_features))
    return (U * torch.arange(1, in_features + 1) ** -0.7) @ V.T


@exercise("05", "best_rank_r", "Eckart-Young: keep the r largest singular values and their vectors, then multiply back")
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


@exercise("05", "loraxs_init", "the same SVD as best_rank_r; B keeps the left singular vectors, A everything else of "
          "the product")  # fmt: skip
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


@exercise("05", "loraxs_start_shift", "build B and A as in loraxs_init, form the update B R A, and compare its "
          "Frobenius norm with W's")  # fmt: skip
def check_loraxs_start_shift(module):
    W, rank = decaying_matrix(), 4
    singular_values = torch.linalg.svdvals(W)
    with_identity = module.loraxs_start_shift(W, rank, torch.eye(rank))
    expected = (singular_values[:rank].norm() / singular_values.norm()).item()  # R = I adds W's best rank-r part
    assert math.isclose(with_identity, expected, rel_tol=1e-3), (
        f"R = I: got {with_identity:.4f}, expected {expected:.4f}"
    )
    small = module.loraxs_start_shift(W, rank, 1e-5 * torch.randn(rank, rank))
    assert small < 1e-4, f"R ~ 1e-5: the weight moved by {small:.2e}, expected next to nothing"


# ---------------------------------------------------------------- 06 fine-tuning


@exercise("06", "completion_targets", "write the whole token list first and shift it by one; then decide which targets "
          "belong to the prompt")  # fmt: skip
def check_completion_targets(module):
    for prompt, completion in (([5, 6, 7], [8, 9]), ([1], [2]), ([3, 4, 5, 6], [7])):
        inputs, targets = module.completion_targets(prompt, completion, 50256)
        expected_inputs, expected_targets = make_batch([Example("", "", prompt, completion)])
        assert list(inputs) == expected_inputs[0].tolist(), f"inputs for {prompt} + {completion} are wrong"
        assert list(targets) == expected_targets[0].tolist(), f"targets for {prompt} + {completion} are wrong"


@exercise("06", "pick_label", "only the label tokens' columns of the logits matter; compare them within each row")
def check_pick_label(module):
    model = tiny_model().eval()
    prompts = [torch.randint(0, 50257, (6,)).tolist() for _ in range(16)]
    labels, label_tokens = [" yes", " no", " maybe"], [3763, 645, 3863]
    examples = [Example("", "", prompt, [3763]) for prompt in prompts]
    with torch.no_grad():
        logits = model(torch.tensor(prompts))[0][:, -1]  # (N, V): the next-token scores after each prompt
        expected = label_log_likelihoods(model, examples, labels).argmax(dim=1)
    got = module.pick_label(logits, label_tokens)
    assert torch.equal(torch.as_tensor(got), expected), "not the most likely label for every prompt"


@exercise("06", "numbers_with_gradient", "which attribute does backward() fill in? Look at a frozen and at a "
          "trainable parameter after it")  # fmt: skip
def check_numbers_with_gradient(module):
    examples = [Example("", "", [5, 6, 7], [8, 9]), Example("", "", [1, 2], [3])]
    inputs, targets = make_batch(examples)
    for method in METHODS[1:]:  # every method that trains
        model = add_adapters(tiny_model(), method, rank=4)
        measured = module.numbers_with_gradient(model, inputs, targets)
        # What it measures: backward reaches the trainable numbers only, exactly the method's count.
        assert measured == parameter_counts(model)[0], (
            f"{method}: {measured:,}, expected {parameter_counts(model)[0]:,}"
        )


# ---------------------------------------------------------------- 07 merging and exporting


@exercise("07", "merged_linear", "a new nn.Linear of the same shape whose weight already contains the update; every "
          "adapter knows its update (lesson 07); do not forget the bias")  # fmt: skip
def check_merged_linear(module):
    model = tiny_model()
    for method in ADAPTER_METHODS:
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


@exercise("07", "adapter_file_bytes", "add_adapters, then save_adapters into a temporary folder; a Path knows "
          "its size through .stat()")  # fmt: skip
def check_adapter_file_bytes(module):
    import tempfile

    sizes = {}
    for method in ("lora", "loraxs"):
        for rank in (4, 8, 16):
            model = add_adapters(tiny_model(), method, rank=rank)
            expected = save_adapters(model, Path(tempfile.mkdtemp()) / "adapter.safetensors")
            sizes[method, rank] = module.adapter_file_bytes(method, rank)
            assert sizes[method, rank] == expected, (
                f"{method} r={rank}: {sizes[method, rank]:,} bytes, not {expected:,}"
            )
    # What it measures: each doubling of r doubles LoRA's data (A, B) and quadruples LoRA-XS's (R).
    for method, factor in (("lora", 2), ("loraxs", 4)):
        growth = (sizes[method, 16] - sizes[method, 8]) / (sizes[method, 8] - sizes[method, 4])
        assert abs(growth - factor) < 0.1, f"{method}: the file grew {growth:.2f}x per doubling, expected {factor}x"


# ---------------------------------------------------------------- 08 TinyLoRA and the export


@exercise("08", "tinylora_R", "each P_i is weighted by its v_i and all of them are added up; torch.einsum or a loop")
def check_tinylora_R(module):
    torch.manual_seed(0)
    v, P = torch.randn(5), torch.randn(5, 3, 3)
    close(module.tinylora_R(v, P), sum(v[i] * P[i] for i in range(5)), "R")


@exercise("08", "loraxs_as_lora", "write ΔW = scaling · B R A as a product of two factors: which side can take R "
          "and the scale without changing its shape?")  # fmt: skip
def check_loraxs_as_lora(module):
    torch.manual_seed(0)
    A, B, R = torch.randn(4, 10), torch.randn(12, 4), torch.randn(4, 4)
    A_lora, B_lora = module.loraxs_as_lora(A, B, R, 0.5)
    assert A_lora.shape == (4, 10) and B_lora.shape == (12, 4), "A' should be r x in and B' out x r"
    close(B_lora @ A_lora, 0.5 * B @ R @ A, "B' A'", atol=1e-5)


@exercise("08", "tinylora_fit_error", "flatten each P_i into a column of an (r², u) matrix; least squares gives the "
          "best v; measure what is left")  # fmt: skip
def check_tinylora_fit_error(module):
    r = 3
    target = torch.randn(r, r, generator=torch.Generator().manual_seed(8))
    errors = {}
    for u in range(1, r * r + 1):
        generator = torch.Generator().manual_seed(11)
        P = torch.normal(0.0, 1 / r**0.5, size=(u, r, r), generator=generator).reshape(u, r * r).T
        best = torch.linalg.lstsq(P, target.reshape(r * r, 1)).solution
        expected = ((P @ best).flatten() - target.flatten()).norm().item() / target.norm().item()
        errors[u] = module.tinylora_fit_error(target, u, seed=11)
        assert isinstance(errors[u], float), "return the relative error as a float"
        assert math.isclose(errors[u], expected, abs_tol=1e-4), f"u = {u}: {errors[u]:.4f}, expected {expected:.4f}"
    # What it measures: u random directions among r² = 9; every R is reached at u = r², none before.
    assert all(errors[u] > 1e-2 for u in range(1, r * r)) and errors[r * r] < 1e-4


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
