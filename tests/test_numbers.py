"""
The counts and byte sizes the README, the docs and the lessons state, recomputed from the code: a change that moves
one of them fails here until the text says the new number.
"""

import copy
import re
import statistics

import pytest
import torch

from conftest import ROOT, SMALL_PRETRAINED, requires_small_pretrained, requires_tokenizer
from loraxs_mini import GPT, GPTConfig, recipe
from loraxs_mini.adapters import EVERY_LINEAR_SPLIT_QKV, add_adapters, parameter_counts, save_adapters
from loraxs_mini.data import load_task
from loraxs_mini.pretrained import load_pretrained
from loraxs_mini.safetensors_file import read_header

README = (ROOT / "README.md").read_text()
ADAPTERS = (ROOT / "docs" / "adapters.md").read_text()  # the Python API and adapter files, moved from the README
CLI = (ROOT / "docs" / "cli.md").read_text()
EXPORT = (ROOT / "docs" / "export.md").read_text()
COMPARISON = (ROOT / "docs" / "comparison.md").read_text()
LESSONS_README = (ROOT / "lessons" / "README.md").read_text()


def trained(model, method, **settings):
    return parameter_counts(add_adapters(copy.deepcopy(model), method, **settings))[0]


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("gpt2"))


@pytest.fixture(scope="module")
def small():
    """The small pretrained model's shape (8 layers, width 256, context 256): counts depend on the shape alone."""
    return GPT(GPTConfig(vocab_size=50257, block_size=256, n_layer=8, n_head=8, n_embd=256))


def test_the_gpt2_counts_in_the_readme(gpt2):
    base = parameter_counts(gpt2)[1]
    assert f"where GPT-2's {base:,} parameters live" in README
    lora, vera = trained(gpt2, "lora", rank=8), trained(gpt2, "vera", rank=8)
    loraxs, split = trained(gpt2, "loraxs", rank=8), trained(gpt2, "loraxs", rank=8, targets=EVERY_LINEAR_SPLIT_QKV)
    assert f"| full | all | {base:,} | 100% |" in ADAPTERS
    assert f"| LoRA | r (in + out) | {lora:,} | {100 * lora / base:.3f}% |" in ADAPTERS
    assert f"| VeRA | r + out | {vera:,} | {100 * vera / base:.3f}% | r = 256: {trained(gpt2, 'vera'):,}" in ADAPTERS
    assert f"| LoRA-XS | r² | {loraxs:,} | {100 * loraxs / base:.4f}% |" in ADAPTERS
    assert f"| LoRA-XS, q, k, v separately | r² | {split:,} | {100 * split / base:.4f}% |" in ADAPTERS
    tokens = torch.zeros(1, 4, dtype=torch.long)  # LoRA-SB's first step: any batch, the count is r² per layer
    lorasb = parameter_counts(add_adapters(copy.deepcopy(gpt2), "lorasb", rank=8, first_step=(tokens, tokens, 1e-3)))[0]
    assert f"| LoRA-SB | r² | {lorasb:,} | {100 * lorasb / base:.4f}% | r = 8: the same |" in ADAPTERS
    assert f"LoRA-XS at rank 8 to every linear layer ({loraxs:,} trainable numbers" in README


# The small adapter file's header holds its checksums as decimal numbers, whose digits vary with the weights and with
# rounding (19,168 to 19,200 bytes over seeds 0 to 4, one thread or two): the docs state the size within this many
# bytes, and so do the tests.
SIZE_TOLERANCE = 16
WEIGHTS_TOLERANCE = 64  # other random weights of the same shape: the checksums' digits and signs differ too


def stated(pattern, text):
    """The number (commas allowed) that `pattern`'s group captures in `text`."""
    match = re.search(pattern, text)
    assert match, f"no {pattern!r} in the text"
    return int(match[1].replace(",", ""))


def test_the_adapter_file_sizes_in_the_readme(gpt2, tmp_path):
    model = add_adapters(copy.deepcopy(gpt2), "loraxs", rank=8)
    small_file = save_adapters(model, tmp_path / "small.safetensors")
    exact = save_adapters(model, tmp_path / "exact.safetensors", frozen=True)
    R_bytes = sum(4 * layer.R.numel() for layer in model.modules() if hasattr(layer, "R"))
    assert f"give or take {SIZE_TOLERANCE} bytes" in ADAPTERS
    small_stated = stated(r"adapter of GPT-2 124M is ([\d,]+) bytes on disk", ADAPTERS)
    assert abs(small_stated - small_file) <= SIZE_TOLERANCE, (small_stated, small_file)
    assert f"is {small_stated:,} bytes on disk ({R_bytes:,} of them are R itself" in ADAPTERS
    assert (
        f"`out/sentiment-loraxs-r8.safetensors`: {small_stated:,} bytes, of\nwhich the 48 R matrices are {R_bytes:,}"
        in (CLI)
    )
    exported = stated(r"\| LoRA-XS r = 8 \| ([\d,]+) bytes \|", EXPORT)  # the export table: other random weights
    assert abs(exported - small_file) <= WEIGHTS_TOLERANCE, (exported, small_file)
    exact_stated = stated(r"Saved with its frozen tensors it is ([\d,]+) bytes", ADAPTERS)
    assert abs(exact_stated - exact) <= SIZE_TOLERANCE, (exact_stated, exact)  # its header holds checksums too
    # The lessons README: the header (8-byte length + JSON) is what does not grow with r.
    _, _, data_start = read_header(tmp_path / "small.safetensors")
    assert data_start == small_file - R_bytes
    header_stated = stated(r"the header does not: ([\d,]+) of LoRA-XS's", LESSONS_README)
    assert abs(header_stated - data_start) <= SIZE_TOLERANCE
    assert f"the header does not: {header_stated:,} of LoRA-XS's {small_stated:,} bytes at r = 8" in LESSONS_README


def test_the_small_model_counts_in_the_comparison(small):
    assert "19,249,920" in README and f"| full | - | {parameter_counts(small)[1]:,} |" in README
    for method, rank, where in (
        ("lora", 16, README), ("vera", 256, README), ("loraxs", 32, README), ("loraxs", 16, README),
        ("lora", 1, COMPARISON), ("lora", 8, COMPARISON), ("loraxs", 8, COMPARISON),
    ):  # fmt: skip
        assert f"{trained(small, method, rank=rank):,}" in where, (method, rank)
    assert f"| 8 | {trained(small, 'tinylora', rank=8):,} |" in README  # TinyLoRA, u = 64: 64 per layer
    vera_1 = trained(small, "vera", rank=1)
    b_alone = sum(layer.out_features for layer in add_adapters(copy.deepcopy(small), "vera").modules()
                  if hasattr(layer, "lambda_b"))  # fmt: skip
    text = " ".join(COMPARISON.split())
    assert f"Below {vera_1:,} numbers only LoRA-XS, TinyLoRA and LoRA-SB (r² a layer" in text
    assert f"not in this table) can go: VeRA at r = 1 has {vera_1:,}" in text
    assert f"{b_alone:,} on this model" in COMPARISON
    assert f"below {vera_1:,} numbers, only LoRA-XS and TinyLoRA of the methods drawn here can go, and LoRA-SB" in text
    assert f"like LoRA-XS (VeRA at r = 1 has {vera_1:,}" in text


@requires_small_pretrained
@requires_tokenizer
def test_lorasb_s_start_in_the_comparison_is_the_rank_r_part_of_a_first_step_at_its_own_rate():
    """
    docs/comparison.md: B R A keeps 75% (sentiment) and 71% (plural) of the first step's squared norm at r = 8,
    η_1 = 0.002, 1,000 times full fine-tuning's first rate. Recomputed without LoRA-SB's code: the share the top 8
    singular values of -η sign(∇_W L) hold (Eckart-Young), over all 32 adapted layers, seed 0.
    """
    base = load_pretrained(SMALL_PRETRAINED)
    lorasb_first = recipe.learning_rate_at(0, 150, recipe.default_learning_rate("lorasb", 8))
    full_first = recipe.learning_rate_at(0, 150, recipe.default_learning_rate("full"))
    text = " ".join(COMPARISON.split())
    full_written = re.sub(r"e-0(\d)", r"e-\1", f"{full_first:g}")  # 2e-06 as the page writes it, 2e-6
    ratio = lorasb_first / full_first
    assert f"η_1 = {lorasb_first:g} at r = 8, {ratio:,.0f} times full fine-tuning's first rate, {full_written})" in text
    lesson_lines = (ROOT / "lessons" / "09_which_subspace.py").read_text().splitlines()
    lesson = " ".join(line.lstrip("# ") for line in lesson_lines)
    assert f"({ratio:,.0f} times full fine-tuning's first rate here)" in lesson
    shares = []
    for task in ("sentiment", "plural"):
        examples = load_task(ROOT / "data" / task).splits["train"]
        inputs, targets, eta = recipe.first_step(examples, 150, 16, 0, recipe.default_learning_rate("lorasb", 8))
        layers = [module for module in base.transformer.h.modules() if isinstance(module, torch.nn.Linear)]
        gradients = torch.autograd.grad(base(inputs, targets)[1], [layer.weight for layer in layers])
        kept = total = 0.0
        for gradient in gradients:
            S = torch.linalg.svdvals(-eta * gradient.sign())
            kept, total = kept + (S[:8] ** 2).sum().item(), total + (S**2).sum().item()
        shares.append(round(100 * kept / total))
    assert len(layers) == 32
    assert f"{shares[0]}% of that step's squared norm on sentiment and {shares[1]}% on plural at r = 8" in text


@requires_small_pretrained
def test_the_top_to_bottom_singular_value_ratios_in_the_methods_page():
    """docs/methods.md: the mean of W's top 8 singular values over its bottom 8's, over the 32 adapted matrices."""
    ratios = []
    for module in load_pretrained(SMALL_PRETRAINED).transformer.h.modules():
        if isinstance(module, torch.nn.Linear):
            S = torch.linalg.svdvals(module.weight.detach().double())
            ratios.append((S[:8].mean() / S[-8:].mean()).item())
    text = " ".join((ROOT / "docs" / "methods.md").read_text().split())
    low, median, high = min(ratios), statistics.median(ratios), max(ratios)
    assert len(ratios) == 32
    said = f"the mean of the top 8 is {low:.0f} to {high:.0f} times the bottom 8's, {median:.1f} times at the median"
    assert said in text


@requires_small_pretrained
def test_the_size_of_each_frozen_pair_the_rate_grid_started_from():
    """
    docs/defaults.md: ||B A|| at r = 8, median over the 32 matrices of the small pretrained model. The top and bottom
    pairs from W's singular values alone (||U Σ Vᵀ|| = √Σ σ²); the drawn pairs as LoRA-XS builds them.
    """
    model = load_pretrained(SMALL_PRETRAINED)
    layers = [module for module in model.transformer.h.modules() if isinstance(module, torch.nn.Linear)]
    singular_values = [torch.linalg.svdvals(layer.weight.detach().double()) for layer in layers]
    sizes = {
        "top pair": [S[:8].norm().item() for S in singular_values],
        "bottom pair at its own scale": [S[-8:].norm().item() for S in singular_values],
    }
    for subspace, scale, said in (("random", "own", "random pair at its own"), ("kaiming-uniform", "top", "Kaiming")):
        adapted = add_adapters(copy.deepcopy(model), "loraxs", rank=8, subspace=subspace, scale=scale)
        sizes[said] = [(m.B @ m.A).norm().item() for m in adapted.modules() if hasattr(m, "R")]
    assert len(layers) == 32 and all(len(values) == 32 for values in sizes.values())
    median = {said: statistics.median(values) for said, values in sizes.items()}
    text = " ".join((ROOT / "docs" / "defaults.md").read_text().split())
    said = (
        f"{median['top pair']:.1f} for the top pair, {median['bottom pair at its own scale']:.1f} for the bottom pair "
        f"at its own scale, {median['random pair at its own']:.1f} for the random pair at its own, "
        f"{median['Kaiming']:.1f} for Kaiming-uniform A and B"
    )
    assert said in text


def test_lesson_09_s_table_of_the_paper_s_controls_is_docs_comparison_s():
    """Lesson 09 quotes three rows of the controls sweep: each cell must be docs/comparison.md's for that pair."""
    section = COMPARISON[COMPARISON.index("## The paper's controls: directions or scale?") :]
    tables = {}  # task -> pair -> the test accuracy at r = 2, 4, 8, 16
    for task in ("sentiment", "plural"):
        table = section[section.index(f"{task}: test accuracy, mean ± std over 3 seeds") :]
        for pair, cells in re.findall(r"^\| ([\w, -]+) \| (.+) \|$", table.split("\n\n")[1], re.M):
            tables.setdefault(task, {})[pair] = re.findall(r"(\d\.\d{3} ± \d\.\d{3}) \(", cells)
    pairs = [
        "top",
        "bottom, top scale",
        "bottom, own scale",
        "random, top scale",
        "random, own scale",
        "Kaiming-uniform",
    ]
    lesson = (ROOT / "lessons" / "09_which_subspace.py").read_text()
    rows = re.findall(r"^#     (sentiment|plural) +r = (\d+) +((?:\d\.\d{3} ± \d\.\d{3} *){6})$", lesson, re.M)
    assert len(rows) == 3
    for task, rank, cells in rows:
        column = [2, 4, 8, 16].index(int(rank))
        quoted = re.findall(r"\d\.\d{3} ± \d\.\d{3}", cells)
        assert quoted == [tables[task][pair][column] for pair in pairs], (task, rank)
