"""
What every lesson shares, so that a lesson's first screen is its idea and not its plumbing.

A lesson (lessons/NN_name.py) runs three ways: as a script (`python lessons/05_svd_and_loraxs.py --quick`, from
any folder), cell by cell in an editor, or as a notebook made from it (Jupyter starts it in lessons/, other tools
in the repository's top folder). Its settings cell holds MODEL and QUICK; this module reads them the same way
everywhere:

- `settings(MODEL, QUICK)` (`quick_setting(QUICK)` for a lesson without a MODEL): as a script, the flags --quick
  and --model PATH override the settings cell; a relative MODEL is looked up from the current folder, then from
  the repository's top, so the paths the docs give work from lessons/ too.
- `load_model(MODEL)`: the model, or one line that says which setting to change (the settings cell in a notebook,
  the flags in a script): never a traceback, never SystemExit in a notebook.
- `repository()`: the clone the lesson belongs to, found from the lesson's own file (a script) or from the
  notebook's folder, so a lesson reads data/ and writes out/ wherever it is started from.
- `pyplot()`, `show(figure, name)`: pictures inline in a notebook, out/lessons/<name>.png from a script
  ($LORAXS_MINI_FIGURES to change the folder), and the same numbers in words without matplotlib.
"""

import os
import sys
from pathlib import Path

from .errors import LoraxsError
from .model import PRETRAINED
from .pretrained import load_pretrained


def in_notebook():
    return "ipykernel" in sys.modules


def repository():
    """
    The clone this lesson belongs to: the folder holding lessons/ and data/, searched upward from the lesson's
    own file when it runs as a script, from the current folder in a notebook (which has no file of its own).
    """
    script = getattr(sys.modules["__main__"], "__file__", None)
    start = Path(script).resolve().parent if script and not in_notebook() else Path.cwd()
    for folder in (start, *start.parents):
        if (folder / "lessons").is_dir() and any((folder / "data").glob("*/train.jsonl")):
            return folder
    raise LoraxsError(
        f"this lesson belongs in a clone of the repository (lessons/ beside data/), and none was found in {start} "
        "or above it: run the lesson from its place in the clone"
    )


def how_to_fix_the_model():
    """Where a student changes the model: the settings cell in a notebook, the flags in a script."""
    checkpoint = "a GPT-2 checkpoint folder (config.json and model.safetensors)"
    if in_notebook():
        return (
            f"in the settings cell (the first code cell) set MODEL to {checkpoint}, or QUICK = True for a tiny "
            "random model, and run the notebook again"
        )
    return f"run the lesson with --model FOLDER, {checkpoint}, or with --quick for a tiny random model"


def quick_setting(quick):
    """QUICK from the settings cell; as a script, --quick turns it on. Also makes a script's errors one line."""
    script_errors()
    return bool(quick) or (not in_notebook() and "--quick" in sys.argv)


def settings(model, quick):
    """(MODEL, QUICK) from the settings cell, or from a script's flags; MODEL is not looked up in quick mode."""
    quick = quick_setting(quick)
    return (model if quick else model_setting(model)), quick


def model_setting(model):
    """
    MODEL from the settings cell, or a script's --model PATH: a preset name (gpt2 ... gpt2-xl, downloaded once),
    or a checkpoint folder or file, looked up from the current folder and then from the repository's top.
    """
    script_errors()
    if not in_notebook() and "--model" in sys.argv:
        position = sys.argv.index("--model") + 1
        if position == len(sys.argv) or sys.argv[position].startswith("--"):
            raise LoraxsError("--model needs a path after it: a GPT-2 checkpoint folder, or a preset such as gpt2")
        model = sys.argv[position]
    if str(model) in PRETRAINED or Path(model).exists():
        return str(model)
    places = [Path.cwd()]
    try:
        places.append(repository())
    except LoraxsError:
        pass  # outside a clone: the current folder is the only place
    for place in places[1:]:
        if (place / model).exists():
            return str((place / model).resolve())
    raise LoraxsError(
        f"MODEL = {str(model)!r} is neither a preset ({', '.join(PRETRAINED)}) nor a file or folder in "
        f"{' or in '.join(str(place) for place in places)}: {how_to_fix_the_model()}"
    )


def load_model(model):
    """load_pretrained(MODEL), or one line: what went wrong, and the setting that fixes it."""
    try:
        return load_pretrained(model)
    except LoraxsError as error:
        raise LoraxsError(f"{error} For this lesson: {how_to_fix_the_model()}") from None


def script_errors():
    """A lesson run as a script prints a LoraxsError as one `error:` line and exits with status 1, as train.py."""
    if in_notebook() or getattr(sys.excepthook, "one_line", False):
        return
    default = sys.excepthook

    def hook(kind, error, traceback):
        if issubclass(kind, LoraxsError):
            print(f"error: {error}", file=sys.stderr)  # Python exits with status 1 after the hook
        else:
            default(kind, error, traceback)

    hook.one_line = True
    sys.excepthook = hook


def pyplot():
    """matplotlib.pyplot, or None (after saying how to get it)."""
    try:
        import matplotlib

        if not in_notebook():
            matplotlib.use("Agg")  # a script draws to a file, not to a window
        import matplotlib.pyplot as plt
    except ImportError:
        print("(pip install matplotlib to see this as a picture)")
        return None
    return plt


def show(figure, name):
    """Inline in a notebook; as a script, a file: out/lessons/<name>.png in the repository (its path printed)."""
    plt = pyplot()
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    if in_notebook():
        plt.show()
        return None
    folder = Path(os.environ.get("LORAXS_MINI_FIGURES") or repository() / "out" / "lessons")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"figure: {path}")
    return path
