"""The lessons run (quick mode), their exercises are real tests, and their numbers agree with train.py."""

import json
import os
import re
import subprocess
import sys

import pytest

import check  # lessons/check.py: conftest puts lessons/ on the path
from conftest import ROOT, SMALL_PRETRAINED, requires_small_pretrained, requires_tokenizer

LESSON_FILES = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.py"))
TOKENIZING_LESSONS = ("01", "02", "06", "09")  # the lessons that read text
FIGURES = {  # lesson -> the picture it draws
    "01": "01_causal_attention", "03": "03_lora_recovers_a_rank_2_update", "04": "04_vera_trained_d_and_b",
    "05": "05_spectrum", "06": "06_loss_curves", "08": "08_tinylora_counts", "09": "09_captured_share",
}  # fmt: skip


def lesson_param(path):
    return pytest.param(path, marks=[requires_tokenizer] if path.name[:2] in TOKENIZING_LESSONS else [])


def test_there_is_a_lesson_per_component():
    assert [path.name[:2] for path in LESSON_FILES] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


@pytest.mark.parametrize("lesson", [lesson_param(path) for path in LESSON_FILES], ids=lambda path: path.stem)
def test_lesson_runs_in_quick_mode_and_draws_its_figure(lesson, tmp_path):
    """From a folder outside the repository: a lesson finds data/ and out/ from its own place in the clone."""
    env = {**os.environ, "LORAXS_MINI_FIGURES": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, str(lesson), "--quick"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    figure = FIGURES.get(lesson.name[:2])
    if figure:
        pytest.importorskip("matplotlib")
        assert (tmp_path / f"{figure}.png").stat().st_size > 10_000, f"{lesson.name} drew no {figure}.png"


def test_a_lesson_outside_a_clone_says_so_in_one_line(tmp_path):
    stray = tmp_path / "06_finetune_and_compare.py"  # the file alone, away from data/
    stray.write_text((ROOT / "lessons" / stray.name).read_text())
    result = subprocess.run([sys.executable, str(stray), "--quick"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: this lesson belongs in a clone of the repository")


def test_a_relative_model_is_looked_up_here_then_at_the_top_and_a_missing_one_names_both(monkeypatch, tmp_path):
    from loraxs_mini import LoraxsError, lesson

    monkeypatch.chdir(ROOT / "lessons")  # where Jupyter starts a notebook
    monkeypatch.setattr(lesson, "in_notebook", lambda: True)  # as in a notebook: the repository from the folder
    assert lesson.model_setting("data/plural") == str(ROOT / "data" / "plural")  # not in lessons/: from the top
    assert lesson.model_setting("exercises") == "exercises"  # here first
    assert lesson.model_setting("gpt2") == "gpt2"  # a preset is a name, not a path
    with pytest.raises(LoraxsError) as error:
        lesson.model_setting("../shared/no-such-model")
    message = str(error.value)
    assert f"nor a file or folder in {ROOT / 'lessons'} or in {ROOT}:" in message
    assert "in the settings cell (the first code cell) set MODEL to a GPT-2 checkpoint folder" in message


def test_every_lesson_has_its_notebook_made_from_it_and_valid():
    nbformat = pytest.importorskip("nbformat")
    result = subprocess.run([sys.executable, "lessons/make_notebooks.py", "--check"], cwd=ROOT, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for lesson in LESSON_FILES:
        notebook = nbformat.read(lesson.with_suffix(".ipynb"), as_version=4)
        nbformat.validate(notebook)
        code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
        # The notebook runs the lesson's code, all of it, in order (the comments become its text).
        lesson_code = [line for line in lesson.read_text().splitlines() if line.strip() and not line.startswith("#")]
        assert [line for line in code.splitlines() if line.strip() and not line.startswith("#")] == lesson_code


def test_the_checker_runs_from_the_command_line_with_one_error_line_for_a_bad_lesson():
    good = subprocess.run([sys.executable, "lessons/check.py", "03", "--solutions"], cwd=ROOT, capture_output=True,
                          text=True)  # fmt: skip
    assert good.returncode == 0 and "3 of 3 passed" in good.stdout
    bad = subprocess.run([sys.executable, "lessons/check.py", "42"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no lesson '42'") and "Traceback" not in bad.stderr


@pytest.mark.parametrize("lesson", check.lessons_with_exercises())
def test_reference_solutions_pass_and_untouched_exercises_fail(lesson, capsys):
    solutions = check.find_file(lesson, solutions=True)
    exercises = check.find_file(lesson, solutions=False)
    assert solutions.name == exercises.name
    total = len(check.checks(lesson))
    assert check.run(lesson, solutions) == (total, total)
    assert check.run(lesson, exercises) == (0, total)  # every single exercise fails until it is done


# Plausible mistakes a student makes: the checker must catch each one.
WRONG_ANSWERS = {
    ("01", "causal_attention"): "import torch\n"
    "def causal_attention(q, k, v):\n"
    "    return torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1) @ v  # no mask",
    ("01", "position_sensitivity"): "def position_sensitivity(model, idx, position):\n"
    "    changed = idx  # not a copy: both runs see the changed tokens\n"
    "    changed[:, position] += 1\n"
    "    return (model(changed)[0] - model(idx)[0]).abs().amax(dim=(0, 2))",
    ("03", "lora_fit_error"): "import torch\n"
    "def lora_fit_error(target, rank, steps=1000, learning_rate=1e-2, seed=0):\n"
    "    A = torch.nn.Parameter(0.1 * torch.randn(rank, target.shape[1]))\n"
    "    B = torch.nn.Parameter(torch.zeros(target.shape[0], rank))\n"
    "    optimizer = torch.optim.Adam([A, B], lr=learning_rate)\n"
    "    for _ in range(steps):\n"
    "        (B @ A - target).square().sum().backward()\n"
    "        optimizer.step()\n"
    "        optimizer.zero_grad()\n"
    "    return (B @ A - target).norm().item()  # not relative to the target",
    ("06", "numbers_with_gradient"): "def numbers_with_gradient(model, inputs, targets):\n"
    "    model(inputs, targets)[1].backward()\n"
    "    return sum(p.numel() for p in model.parameters())  # every number, gradient or not",
    ("02", "conv1d_to_linear"): "def conv1d_to_linear(weight):\n    return weight  # not transposed",
    ("03", "lora_forward"): "import torch.nn.functional as F\n"
    "def lora_forward(x, W, b, A, B, alpha):\n"
    "    return F.linear(x, W, b) + F.linear(F.linear(x, A), B)  # alpha / r forgotten",
    ("04", "shared_pair"): "import torch\n"
    "def shared_pair(rank, max_in, max_out, seed):\n"
    "    g = torch.Generator().manual_seed(seed)\n"
    "    B = torch.empty(max_out, rank).uniform_(-(6 / rank) ** 0.5, (6 / rank) ** 0.5, generator=g)\n"
    "    A = torch.empty(rank, max_in).uniform_(-(6 / max_in) ** 0.5, (6 / max_in) ** 0.5, generator=g)\n"
    "    return A, B  # drawn in the wrong order",
    ("05", "loraxs_init"): "import torch\n"
    "def loraxs_init(W, r):\n"
    "    U, S, Vh = torch.linalg.svd(W, full_matrices=False)\n"
    "    return U[:, :r], Vh[:r]  # Σ_r forgotten",
    ("05", "loraxs_start_shift"): "import torch\n"
    "def loraxs_start_shift(W, rank, R):\n"
    "    U, S, Vh = torch.linalg.svd(W, full_matrices=False)\n"
    "    B, A = U[:, :rank] * S[:rank], Vh[:rank]  # W_r split the other way: R = I cannot tell, a random R can\n"
    "    return ((B @ R @ A).norm() / W.norm()).item()",
    ("06", "completion_targets"): "def completion_targets(p, c, end):\n"
    "    tokens = p + c + [end]\n"
    "    return tokens[:-1], tokens[1:]  # the prompt is graded too",
    ("08", "loraxs_as_lora"): "def loraxs_as_lora(A, B, R, scaling):\n    return A, B @ R  # the scale forgotten",
    ("09", "captured_share"): "def captured_share(delta, U, V):\n"
    "    return ((U.T @ delta @ V).norm() / delta.norm()).item()  # norms, not squared norms",
    ("09", "first_step_effects"): "import torch\n"
    "def first_step_effects(W, gradient, rank, learning_rate):\n"
    "    U, S, Vh = torch.linalg.svd(W, full_matrices=False)\n"
    "    B, A = U[:, -rank:], S[:rank, None] * Vh[-rank:]  # the top scale for both bottom pairs\n"
    "    effects = {}\n"
    "    for name, (B, A) in {'top': (U[:, :rank], S[:rank, None] * Vh[:rank]), 'bottom, top scale': (B, A),\n"
    "                         'bottom, own scale': (B, A)}.items():\n"
    "        delta = B @ (-learning_rate * (B.T @ gradient @ A.T).sign()) @ A\n"
    "        effects[name] = (delta.norm().item(), (gradient * delta).sum().item())\n"
    "    return effects",
    ("07", "merged_linear"): "import torch\n"
    "def merged_linear(adapter):\n"
    "    adapter.merge()  # changes the adapter instead of building a new layer\n"
    "    return adapter.base",
}


@pytest.mark.parametrize("lesson, name", sorted(WRONG_ANSWERS))
def test_plausible_mistakes_are_caught_with_a_hint(lesson, name, tmp_path, capsys):
    path = tmp_path / f"ex{lesson}_attempt.py"
    path.write_text(WRONG_ANSWERS[lesson, name] + "\n")
    passed, _ = check.run(lesson, path)
    output = capsys.readouterr().out
    assert re.search(rf"\[fail\] \d\. {name}: not yet", output) and "hint:" in output
    assert passed == 0


@requires_tokenizer
def test_lesson_06_loop_and_counts_agree_with_train_py(tmp_path):
    lesson = subprocess.run(
        [sys.executable, "lessons/06_finetune_and_compare.py", "--quick"], cwd=ROOT, capture_output=True, text=True
    )
    assert lesson.returncode == 0, lesson.stderr[-3000:]
    printed = dict(re.findall(r"^(\w+): ([\d,]+) trainable parameters$", lesson.stdout, re.M))
    assert set(printed) == {"full", "lora", "vera", "loraxs", "tinylora", "lorasb"}
    result = subprocess.run(
        [sys.executable, "train.py", "--init-from", "random:tiny", "--method", "full,lora,vera,loraxs,tinylora,lorasb",
         "--steps", "10", "--no-save", "--out", tmp_path],  # fmt: skip
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for method, count in printed.items():
        name = f"sentiment-{method}" + {"full": "", "vera": "-r256", "tinylora": "-r2"}.get(method, "-r8")  # own rank
        assert json.loads((tmp_path / f"{name}.json").read_text())["trainable_parameters"] == int(
            count.replace(",", "")
        )
    # The lesson's loop, written out, and train.py's: the same losses from the same start, seed and data order.
    first, last = map(float, re.search(r"^loraxs: loss ([\d.]+) -> ([\d.]+)", lesson.stdout, re.M).groups())
    losses = json.loads((tmp_path / "sentiment-loraxs-r8.json").read_text())["losses"]
    assert len(losses) == 10 and (first, last) == (round(losses[0], 4), round(losses[-1], 4))


def test_every_lesson_opens_with_a_settings_cell_that_a_notebook_reader_can_change():
    nbformat = pytest.importorskip("nbformat")
    for lesson in LESSON_FILES:
        notebook = nbformat.read(lesson.with_suffix(".ipynb"), as_version=4)
        first_code = next(cell.source for cell in notebook.cells if cell.cell_type == "code")
        assert "QUICK = False" in first_code, lesson.name  # Jupyter has no --quick to pass: this line is the switch
        if "--model" in lesson.read_text():
            assert 'MODEL = "gpt2"' in first_code, lesson.name


def test_each_lesson_header_gives_the_time_the_lessons_readme_gives():
    table = (ROOT / "lessons" / "README.md").read_text()
    for lesson in LESSON_FILES:
        header = re.search(r"about (\d+) (second|minute)s", lesson.read_text())
        if header:
            unit = "s" if header.group(2) == "second" else "min"
            row = next(line for line in table.splitlines() if line.startswith(f"| [{lesson.name}]"))
            assert f"| {header.group(1)} {unit} |" in row, (lesson.name, header.group(0), row)


# What a student's file can do to the checker, and what the checker must say: (lesson, file text, words expected).
CHECKER_CASES = {
    "exit in an exercise": ("02", "def conv1d_to_linear(weight):\n    exit()\n",
                            "[fail] 1. conv1d_to_linear: it called exit()"),
    "exit on import": ("02", "exit()\n", "could not import the file: SystemExit"),
    "never returns": ("02", "def conv1d_to_linear(weight):\n    while True:\n        pass\n",
                      "still running after 1 s"),
    "no return": ("02", "def conv1d_to_linear(weight):\n    weight.T\n",
                  "conv1d_to_linear returned None; it should return the weight that makes"),
    "right, but changes its input": ("02", "def conv1d_to_linear(weight):\n    return weight.t_()\n",
                                     "[pass] 1. conv1d_to_linear: passed"),
}  # fmt: skip


@pytest.mark.parametrize("case", CHECKER_CASES)
def test_the_checker_survives_what_a_student_file_does_and_says_what_happened(case, tmp_path, capsys):
    lesson, text, words = CHECKER_CASES[case]
    path = tmp_path / f"ex{lesson}_attempt.py"
    path.write_text(text)
    check.run(lesson, path, seconds=1)
    assert words in capsys.readouterr().out


def test_the_checker_refuses_a_file_that_is_not_python_in_one_line(tmp_path):
    (tmp_path / "ex01.txt").write_text("def f(): pass\n")
    result = subprocess.run(
        [sys.executable, "lessons/check.py", "01", "--file", tmp_path / "ex01.txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and result.stderr.startswith("error: --file") and "Traceback" not in result.stderr


@requires_tokenizer
@requires_small_pretrained
def test_lesson_09_shares_on_the_small_pretrained_model_are_the_ones_its_text_states(tmp_path):
    env = {**os.environ, "LORAXS_MINI_FIGURES": str(tmp_path)}
    result = subprocess.run([sys.executable, "lessons/09_which_subspace.py", "--model", str(SMALL_PRETRAINED)],
                            cwd=ROOT, capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    at_rank_8 = {
        name: float(re.search(rf"^{name} +(?:[\d.]+ +){{3}}([\d.]+)", result.stdout, re.M).group(1))
        for name in ("top", "bottom", "random", "gradient", "ceiling")
    }
    stated = re.search(r"at r = 8: gradient (\d+)%, top ([\d.]+)%, random ([\d.]+)%, bottom\n# ([\d.]+)%, and the "
                       r"ceiling (\d+)%", (ROOT / "lessons" / "09_which_subspace.py").read_text())  # fmt: skip
    for name, percent in zip(("gradient", "top", "random", "bottom", "ceiling"), stated.groups()):
        assert f"{100 * at_rank_8[name]:.{len(percent.partition('.')[2])}f}" == percent, (name, at_rank_8[name])
    # Section 5: one step on R for each pair, as printed, and as the text says it.
    step = {
        name: [
            abs(float(value)) for value in re.search(rf"^{name} +([\d.]+) +\S+ +(\S+)$", result.stdout, re.M).groups()
        ]
        for name in ("top", "bottom, top scale", "bottom, own scale")
    }  # pair -> [||ΔW||, loss change per unit of ||ΔW||], medians over the layers
    text = " ".join(line.lstrip("# ") for line in (ROOT / "lessons" / "09_which_subspace.py").read_text().splitlines())
    (top, _), (bottom, bottom_per_unit), (own, own_per_unit) = step.values()
    assert f"step is {bottom / own:.1f}x smaller at its own scale (||ΔW|| {own:.3f} against {bottom:.3f})" in text
    assert f"buys as much loss per unit of size ({own_per_unit:.2f} and {bottom_per_unit:.2f})" in text
    assert f"as large as the top pair's ({top:.3f}), and buys about half as much ({bottom_per_unit:.2f} against" in text
    assert f"against {step['top'][1]:.2f})" in text and 0.4 < bottom_per_unit / step["top"][1] < 0.6  # "about half"


@pytest.mark.parametrize("limit", ["-1", "nan", "0"])
def test_the_checker_s_time_limit_must_be_a_positive_number(limit):
    result = subprocess.run([sys.executable, "lessons/check.py", "03", "--solutions", "--time-limit", limit], cwd=ROOT,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: argument --time-limit: must be a positive finite number, got {limit} (--help lists every flag)"
    )


def solutions_with(tmp_path, replacement):
    """Lesson 03's reference solutions with lora_forward's first line replaced: an exercise file of a kind."""
    text = (ROOT / "lessons" / "solutions" / "ex03_lora.py").read_text()
    old = "    rank = A.shape[0]\n    return F.linear(x, W, b) + (alpha / rank) * F.linear(F.linear(x, A), B)\n"
    assert old in text
    path = tmp_path / "ex03_lora.py"
    path.write_text(text.replace(old, replacement))
    return path


def run_checker(path, *flags):
    command = [sys.executable, "lessons/check.py", "03", "--file", str(path), *flags]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_an_exercise_that_swallows_every_exception_still_stops_at_its_time_limit(tmp_path):
    path = solutions_with(
        tmp_path,
        "    import time\n    while True:\n        try:\n            time.sleep(0.05)\n"
        "        except BaseException:\n            pass\n",
    )
    result = run_checker(path, "--time-limit", "2")  # and the checker ends: the loop ended with its process
    assert "[fail] 1. lora_forward: still running after 2 s and stopped" in result.stdout
    assert "[pass] 2. merged_weight" in result.stdout  # the next check runs as if nothing had happened


def test_an_exercise_that_switches_autograd_off_does_not_break_the_next_check(tmp_path):
    body = "    rank = A.shape[0]\n    return F.linear(x, W, b) + (alpha / rank) * F.linear(F.linear(x, A), B)\n"
    path = solutions_with(tmp_path, "    torch.set_grad_enabled(False)\n" + body)
    result = run_checker(path)
    assert "3 of 3 passed" in result.stdout  # lora_fit_error trains with autograd: the grad mode did not leak


def test_an_exercise_that_changes_its_input_in_place_is_said_on_its_line(tmp_path):
    path = solutions_with(
        tmp_path,
        "    rank = A.shape[0]\n    result = F.linear(x, W, b) + (alpha / rank) * "
        "F.linear(F.linear(x, A), B)\n    W.zero_()\n    return result\n",
    )
    result = run_checker(path)
    assert "[pass] 1. lora_forward: passed; note: lora_forward changed its input in place" in result.stdout
    assert "3 of 3 passed" in result.stdout
