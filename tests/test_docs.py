"""
The docs are tests: every shell and Python block of every Markdown page runs here as written, in the page's
order, in a fresh copy of the repository, and must exit with status 0; the files train.py says it wrote must be
there. A failure names the page and the block's line.

Pages are found by glob when the test runs, so a new page is covered. Blocks are the fenced ones tagged bash, sh,
shell, console or python, and any untagged or indented block that reads as a command or as Python. Each shell
block runs in bash with `set -eo pipefail` (a failing command stops it), each Python block in `python -`, in the
copy's top folder; a later block may read what an earlier one wrote.

Nothing else changes, except what SHRINK lists: a smaller model and budget, never other code. Lines that set the
machine up are not run here (NOT_RUN), each with its reason.
"""

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from conftest import ROOT, require
from loraxs_mini import GPT, GPTConfig, save_pretrained

SKIPPED_FOLDERS = {".git", ".venv", "out", "build", ".pytest_cache", ".ci-cache", "node_modules", "__pycache__"}
PAGES = sorted(
    path.relative_to(ROOT)
    for path in ROOT.rglob("*.md")
    if not SKIPPED_FOLDERS & set(path.relative_to(ROOT).parts) and ".egg-info" not in str(path)
)
SHELL, PYTHON = ("bash", "sh", "shell", "console"), ("python", "py", "python3")

# What changes before a block runs: (pattern, replacement, why). {tiny} is a tiny random GPT-2 checkpoint folder in
# GPT-2's Hugging Face layout, {tmp} a private temporary folder. The copy's ../shared/pretrained-small-gpt2 (the
# stand-in the docs use offline) is that tiny checkpoint too, and its ../shared/tiktoken_cache the real one.
SHRINK = [
    (
        r"GPTConfig\.from_name\((['\"])gpt2\1\)",
        r"GPTConfig.from_name(\1tiny\1)",
        "GPT-2's shape (124M random weights) -> the tiny preset's (2 blocks, width 32)",
    ),
    (r"(['\"])gpt2\1", r"\1{tiny}\1", "GPT-2 itself (a 500 MB download) -> the tiny checkpoint"),
    (r"--base gpt2\b", "--base {tiny}", "GPT-2 itself, as the export's base -> the tiny checkpoint"),
    (r"--steps \d+", "--steps 2", "a budget of steps given on the command line -> 2 steps"),
    (
        r"\btrain\.py\b",
        "train.py --init-from {tiny} --steps 2",
        "train.py's default model and budget (GPT-2, 150 steps) -> the tiny checkpoint, 2 steps; an --init-from or "
        "--steps written in the command comes later and wins",
    ),
    (r"(lessons/\d\d_\w+\.py)", r"\1 --quick", "a lesson on GPT-2 (seconds to 13 minutes) -> its --quick mode"),
    (
        r"-m loraxs_mini\.bench\b",
        "-m loraxs_mini.bench --shape tiny --steps 1 --warmup 1 --no-xl --no-memory --workload finetune",
        "the benchmark on GPT-2's shape (minutes; its peak-memory runs start a process for "
        "each configuration) -> its own flags for the tiny shape, one step; tests/test_bench.py runs the rest",
    ),
    (r"/tmp/", "{tmp}/", "/tmp -> a private temporary folder, so runs never meet"),
    (
        r"\$\{rates//,/ \}",
        "${rates%%,*}",
        "a grid of hundreds of runs (docs/defaults.md): a grid line's list of rates cut to its first rate",
    ),
    (
        r"(for (?:lr|r|run) in )(\"[^\"]*\"|\S+)(?: (?:\"[^\"]*\"|\S+))*?(?=; do)",
        r"\1\2",
        "the same: each loop over rates, ranks or runs cut to its first value",
    ),
    (r"(<<'GRID'\n[^\n]*\n)(?:[^\n]*\n)*?(?=GRID\n)", r"\1", "the same: a grid's lines cut to its first"),
    (r"(for seed in \d+ \d+)(?: \d+)+(?=; do)", r"\1", "a loop over seeds cut to two, the fewest a spread needs"),
    (r"--seeds [3-9]\b", "--seeds 2", "the same: --seeds 3 -> 2"),
]
SHRINK_DATA = 24  # each task's validation and test splits cut to their first 24 examples: fewer examples scored

NOT_RUN = [  # a line that starts with this is left out of its block: (start, why)
    ("git clone", "set-up: .ci/run starts from a clean clone"),
    ("python -m venv", "set-up: .ci/run makes the virtual environment"),
    ("pip install", "set-up: .ci/run installs the project and its [test] extra on a fresh machine"),
    ("python -m pytest", "the test command itself: .ci/run runs it, and this test is part of it"),
]

COMMAND = re.compile(r"^\s*(\$ |python |python3 |torchrun |pip |git |bash |time |for |export |cd )")
PYTHON_START = re.compile(r"^\s*(import |from \w[\w.]* import |print\()")


def blocks(page):
    """[(line number, 'shell' or 'python', text)]: the page's code blocks, fenced or indented, in order."""
    found, lines, number = [], page.read_text(encoding="utf-8").splitlines(), 0
    while number < len(lines):
        line = lines[number]
        fence = re.match(r"^(\s*)(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            indent, marker, tag = fence.groups()
            end = next((i for i in range(number + 1, len(lines)) if lines[i].strip().startswith(marker)), len(lines))
            text = "\n".join(line[len(indent) :] for line in lines[number + 1 : end])
            kind = "shell" if tag in SHELL else "python" if tag in PYTHON else guess(text) if not tag else None
            if kind:
                found.append((number + 1, kind, text))
            number = end + 1
            continue
        previous = lines[number - 1] if number else ""
        if line.startswith("    ") and not previous.strip() and not in_list(lines, number):
            end = number
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            text = "\n".join(line[4:] for line in lines[number:end]).strip("\n")
            if guess(text):
                found.append((number + 1, guess(text), text))
            number = end
            continue
        number += 1
    return found


def in_list(lines, number):
    """Is this indented line the continuation of a list item (not a code block)?"""
    for line in reversed(lines[:number]):
        if line.strip() and not line.startswith(" "):
            return bool(re.match(r"^(\s*[-*+]|\s*\d+\.)\s", line))
    return False


def guess(text):
    first = next((line for line in text.splitlines() if line.strip()), "")
    return "shell" if COMMAND.match(first) else "python" if PYTHON_START.match(first) else None


def runnable(text, kind):
    """The block as it runs here: NOT_RUN lines left out, then every SHRINK substitution made."""
    if kind == "shell":
        lines = [line for line in text.splitlines() if not line.lstrip("$ ").startswith(tuple(s for s, _ in NOT_RUN))]
        text = "\n".join(line.removeprefix("$ ") for line in lines)
    for pattern, replacement, _ in SHRINK:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return text


def files_said(output):
    """The files a command says it wrote: '... in out/x.json', 'wrote out/comparison-x.md, .json, .csv and .png'."""
    said = []
    pattern = r"([\w./-]*\w)\.(json|safetensors|md|csv|png)\b((?:,? (?:and )?\.(?:json|safetensors|md|csv|png)\b)*)"
    for stem, suffix, more in re.findall(pattern, output):
        said += [f"{stem}.{suffix}"] + [stem + extra for extra in re.findall(r"\.\w+", more)]
    return said


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs") / "tiny-gpt2"
    torch.manual_seed(0)
    save_pretrained(GPT(GPTConfig.from_name("tiny")), folder)
    return folder


def fresh_copy(sandbox, tiny):
    """The repository as a clone has it (no virtual environment, no outputs), beside a ../shared of its own."""
    copy = sandbox / "repository"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(*SKIPPED_FOLDERS, "*.egg-info"))
    (sandbox / "shared").mkdir()
    shutil.copytree(tiny, sandbox / "shared" / "pretrained-small-gpt2")
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        (sandbox / "shared" / "tiktoken_cache").symlink_to(Path(os.environ["TIKTOKEN_CACHE_DIR"]).resolve())
    for split in copy.glob("data/*/*.jsonl"):
        if split.stem in ("validation", "test"):
            lines = split.read_text(encoding="utf-8").splitlines(keepends=True)
            split.write_text("".join(lines[:SHRINK_DATA]), encoding="utf-8")
    for solution in copy.glob("lessons/solutions/ex*.py"):  # a student who has done the exercises checks them
        shutil.copy(solution, copy / "lessons" / "exercises" / solution.name)
    return copy


def test_every_page_is_found_and_its_blocks_are_read():
    assert Path("README.md") in PAGES and Path("docs/comparison.md") in PAGES and Path("lessons/README.md") in PAGES
    readme = blocks(ROOT / "README.md")
    assert any(kind == "python" for _, kind, _ in readme) and any("train.py" in text for _, _, text in readme)
    for start, _ in NOT_RUN:  # every entry still names a line of some page: the list does not rot
        assert any(start in text for page in PAGES for _, _, text in blocks(ROOT / page)), start


def test_the_block_reader_and_the_shrinking_on_examples(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```bash\npython train.py --method all --steps 450\n```\n\n```\na tree, not code\n```\n\n"
        "- a list item\n\n    its continuation\n\nAnd:\n\n    import torch\n    print(torch.ones(2))\n"
    )
    assert blocks(page) == [
        (3, "shell", "python train.py --method all --steps 450"),
        (17, "python", "import torch\nprint(torch.ones(2))"),
    ]
    shell = runnable("python train.py --method all --steps 450\npip install -e .", "shell")
    assert shell == "python train.py --init-from {tiny} --steps 2 --method all --steps 2"
    assert runnable("for lr in 1e-3 3e-3; do", "shell") == "for lr in 1e-3; do"
    assert files_said("results in out/a-r8.json; wrote out/c.md, .json, .csv and .png, and out/d.png") == [
        "out/a-r8.json",
        "out/c.md",
        "out/c.json",
        "out/c.csv",
        "out/c.png",
        "out/d.png",
    ]


def run_page(page, tiny, sandbox):
    """Every block of `page` in turn, in a fresh copy of the repository: None, or what went wrong, where."""
    copy = fresh_copy(sandbox, tiny)
    (sandbox / "tmp").mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # this Python, as `python`
        "LORAXS_MINI_CACHE": str(sandbox / "cache"),
        "HF_HUB_OFFLINE": "1",  # nothing is downloaded: every model here is the tiny checkpoint
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "MPLBACKEND": "Agg",
        "TIKTOKEN_CACHE_DIR": str(sandbox / "shared" / "tiktoken_cache"),
        "OMP_NUM_THREADS": "1",  # two pages run at once, one on each of two cores
    }
    for line, kind, text in blocks(ROOT / page):
        where = f"{page}, line {line}"
        text = runnable(text, kind).replace("{tiny}", str(tiny)).replace("{tmp}", str(sandbox / "tmp"))
        if not text.strip():
            continue  # only set-up lines (NOT_RUN)
        command = ["bash", "-c", "set -eo pipefail\n" + text] if kind == "shell" else [sys.executable, "-"]
        result = subprocess.run(
            command,
            input=text if kind == "python" else None,
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = result.stdout + result.stderr
        if result.returncode != 0:
            return f"{where}: exit status {result.returncode}\n{text}\n---\n{output[-4000:]}"
        missing = [path for path in files_said(result.stdout) if not (copy / path).exists()]
        if missing and "train.py" in text:
            return f"{where}: train.py said it wrote {missing}, which are not there\n{output[-2000:]}"
    return None


@pytest.fixture(scope="module")
def page_runs(request, tiny_checkpoint, tmp_path_factory):
    """Every page this session tests, two at a time (the longest first), started when the first is asked for."""
    require(tokenizer=True)  # the pages train on text
    tests = [item for item in request.session.items if item.originalname == "test_the_page_runs_as_written"]
    chosen = {item.callspec.params["page"] for item in tests}
    pool = ThreadPoolExecutor(max_workers=2)
    runs = {
        page: pool.submit(run_page, page, tiny_checkpoint, tmp_path_factory.mktemp("page"))
        for page in sorted(chosen, key=lambda page: -(ROOT / page).stat().st_size)
    }
    yield runs
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("page", [page for page in PAGES if blocks(ROOT / page)], ids=str)
def test_the_page_runs_as_written(page, page_runs):
    failure = page_runs[page].result()
    assert failure is None, failure


LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target)
POINTER = re.compile(r"([\w./-]+\.md)(?:#([\w-]+)|, \"([^\"]+)\")")  # docs/x.md#anchor, or README.md, "A section"


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    """The anchors of a page's headings (outside its code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_every_link_and_pointer_leads_to_a_page_and_a_section_that_exist():
    broken = []
    sources = (
        [ROOT / page for page in PAGES]
        + [path for folder in ("loraxs_mini", "lessons", "tests") for path in (ROOT / folder).rglob("*.py")]
        + [ROOT / "train.py"]
    )
    sources.remove(Path(__file__))  # its own examples
    for source in sources:
        text = source.read_text(encoding="utf-8")
        if source.suffix == ".md":  # links, from the page's folder
            targets = [(target, source.parent) for target in LINK.findall(text)]
        else:  # pointers in comments and docstrings, from the top
            targets = [(f"{path}#{anchor or slug(section)}", ROOT) for path, anchor, section in POINTER.findall(text)]
        for target, base in targets:
            if target.startswith(("http://", "https://", "mailto:")) or "{" in target:
                continue
            path, _, anchor = target.partition("#")
            page = (base / path).resolve() if path else source
            if not page.exists():
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and page.suffix == ".md" and anchor not in anchors(page):
                broken.append(f"{source.relative_to(ROOT)}: {target} (no such section)")
    assert not broken, "\n".join(broken)
