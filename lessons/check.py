"""
The exercise checker: python lessons/check.py 03

Each lesson ends with exercises in lessons/exercises/exNN_*.py: functions to
complete. Their checks stand next to them, in lessons/exercises/checkNN_*.py:
one check_<name> per exercise, which runs your function on fresh inputs and
compares it with an independent answer. Each line of the report starts with
[pass], [fail] or [todo]; a passed experiment also prints what it measured. The last exercise of each lesson is an
experiment, checked twice: against the checker's own measurement, and on the
consequence the lesson predicts. After a wrong attempt the checker prints the
check's docstring: a hint that points the way without giving the code.

    python lessons/check.py 03               your exercises for lesson 03
    python lessons/check.py all              every lesson
    python lessons/check.py 03 --solutions   the reference solutions (lessons/solutions/)
    python lessons/check.py 03 --file F.py   any file with the same functions
"""

import ast
import contextlib
import copy
import importlib.util
import inspect
import os
import pickle
import re
import select
import signal
import sys
import time
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.cli import ArgumentParser, positive
from loraxs_mini.errors import LoraxsError, friendly_errors

LESSONS = Path(__file__).resolve().parent
EXERCISES = LESSONS / "exercises"
TIME_LIMIT = 120  # seconds an exercise may run (the experiments train for a few seconds); --time-limit to change


def close(actual, expected, what, atol=1e-5):
    assert isinstance(actual, torch.Tensor), f"{what} should be a tensor, got {type(actual).__name__}"
    assert actual.shape == expected.shape, f"{what} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    error = (actual.float() - expected.float()).abs().max().item() if actual.numel() else 0.0
    assert error <= atol, f"{what} is off by up to {error:.2e}"


def tiny_model():
    """The tiny preset (2 blocks, width 32), drawn from seed 0: the same model in every check, in seconds."""
    torch.manual_seed(0)
    return GPT(GPTConfig.from_name("tiny"))


def load_module(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def time_limit(seconds):
    """Stop the code inside after `seconds` with a TimeoutError (where the system has alarms: Linux, macOS)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s: an endless loop, or far more work than needed?")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def promises(lesson):
    """name -> what the exercise should return, in the words of its docstring in lessons/exercises ("Return ...")."""
    (path,) = EXERCISES.glob(f"ex{lesson}_*.py")
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        match = isinstance(node, ast.FunctionDef) and re.search(
            r"Return (.+?)\.(\s|$)", ast.get_docstring(node) or "", re.S
        )
        if match:
            found[node.name] = "return " + " ".join(match.group(1).split())
    return found


CHANGED = []  # what an exercise changed in place, said on its line (each check runs in a process of its own)


def guarded(function, name, promise):
    """
    The student's function as the checks call it: on copies of its tensors and lists (a correct answer that changes
    its input in place is still correct), on the models themselves (a model changed where a new one was asked for is
    the mistake the check looks for; the change goes no further, each check runs in a process of its own), with a
    note on its line when it changed what it was given, and one clear line when it returns nothing.
    """

    def call(*args, **kwargs):
        copies = [copy.deepcopy(arg) if isinstance(arg, (torch.Tensor, list)) else arg for arg in args]
        watched = (torch.Tensor, list, torch.nn.Module)
        originals = [copy.deepcopy(arg) if isinstance(arg, watched) else arg for arg in copies]
        result = function(*copies, **kwargs)
        if any(not same(a, b) for a, b in zip(copies, originals)) and name not in CHANGED:
            CHANGED.append(name)
        if result is None:
            raise AssertionError(
                f"{name} returned None; it should {promise or 'return its answer'} (a missing return?)"
            )
        return result

    return call


def same(a, b):
    """Equal tensors, lists or models (every tensor of their state); anything else as ==."""
    if isinstance(a, torch.nn.Module):
        a, b = list(a.state_dict().values()), list(b.state_dict().values())
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.equal(a.detach(), b.detach())
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return True


def isolated(work, seconds):
    """
    ("passed", measured), ("todo", None), ("exit", None), ("failed", why) or ("timeout", None): work() run in a
    child process of its own (where the system can fork: Linux, macOS), killed after `seconds`. So an exercise that
    loops forever, even one that catches every exception, ends with its process, and nothing it changes (the grad
    mode, the default dtype, the threads, a model it was given) reaches the next check. Elsewhere, in this process,
    stopped by an alarm where there is one.
    """
    if not hasattr(os, "fork"):
        try:
            with time_limit(seconds):
                return outcome(work)
        except TimeoutError:
            return "timeout", None
    sys.stdout.flush()
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: run, report, and leave without running any cleanup of the parent's
        os.close(reader)
        torch.set_num_threads(1)  # as DataLoader's workers do: a forked process uses no thread pool of its parent
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(pickle.dumps(outcome(work)))
        os._exit(0)
    os.close(writer)
    received, deadline = b"", time.monotonic() + seconds
    with os.fdopen(reader, "rb") as pipe:
        while (left := deadline - time.monotonic()) > 0 and select.select([pipe], [], [], left)[0]:
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:  # the child is done
                os.waitpid(child, 0)
                return pickle.loads(received) if received else ("failed", "its process ended without a word")
            received += chunk
    os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    return "timeout", None


def outcome(work):
    """What work() came to, as isolated() reports it, with what the exercise changed in place."""
    try:
        measured = work()
        kind, detail = (
            "passed",
            measured if measured is None or isinstance(measured, (str, int, float)) else str(measured),
        )
    except SystemExit:
        kind, detail = "exit", None
    except NotImplementedError:
        kind, detail = "todo", None
    except BaseException as error:  # noqa: B036 (whatever the exercise raised, even KeyboardInterrupt, is its result)
        kind, detail = "failed", f"{type(error).__name__}: {error}"
    return kind, detail, list(CHANGED)


def lessons_with_exercises():
    return sorted(path.name[5:7] for path in EXERCISES.glob("check[0-9][0-9]_*.py"))


def checks(lesson):
    """[(exercise name, check, hint)] of a lesson, in the order they are written in its check file."""
    (path,) = EXERCISES.glob(f"check{lesson}_*.py")
    module = load_module(path)
    functions = [f for name, f in vars(module).items() if name.startswith("check_") and inspect.isfunction(f)]
    return [(f.__name__.removeprefix("check_"), f, inspect.getdoc(f)) for f in functions]


def find_file(lesson, solutions):
    folder = LESSONS / ("solutions" if solutions else "exercises")
    matches = sorted(folder.glob(f"ex{lesson}_*.py"))
    if not matches:
        raise LoraxsError(f"no ex{lesson}_*.py in {folder}")
    return matches[0]


def run(lesson, path, seconds=TIME_LIMIT):
    """Run every check of a lesson on the file, each within `seconds`; returns (passed, total)."""
    print(f"lesson {lesson}: {path}")
    lesson_checks, promised = checks(lesson), promises(lesson)
    try:
        with time_limit(seconds):
            module = load_module(path)
    except (Exception, SystemExit) as error:  # a syntax error in the student's file, say, or an exit() in it
        print(f"  could not import the file: {type(error).__name__}: {error}")
        return 0, len(lesson_checks)
    for name, _, _ in lesson_checks:  # every exercise function, also where the student's own code calls it
        if callable(getattr(module, name, None)):
            setattr(module, name, guarded(getattr(module, name), name, promised.get(name)))
    passed = 0
    for number, (name, check, hint) in enumerate(lesson_checks, start=1):
        if not hasattr(module, name):
            print(f"  [fail] {number}. {name}: not yet: the file has no function {name}\n         hint: {hint}")
            continue
        # An experiment's check returns what it measured, to print with the verdict.
        kind, detail, *changed = isolated(lambda check=check: check(module), seconds)
        changed = changed[0] if changed else []
        note = f"; note: {', '.join(changed)} changed its input in place" if changed else ""
        if kind == "passed":
            print(f"  [pass] {number}. {name}: passed" + (f"; measured: {detail}" if detail else "") + note)
            passed += 1
        elif kind == "todo":
            print(f"  [todo] {number}. {name}: not done yet: replace its TODO (the hint comes after a first try)")
        elif kind == "exit":
            print(f"  [fail] {number}. {name}: it called exit(); an exercise returns its answer, it does not end the "
                  "program")  # fmt: skip
        elif kind == "timeout":
            print(
                f"  [fail] {number}. {name}: still running after {seconds:g} s and stopped: an endless loop, or far "
                "more work than needed?"
            )
        else:
            print(f"  [fail] {number}. {name}: not yet: {detail}{note}\n         hint: {hint}")
    print(f"  {passed} of {len(lesson_checks)} passed\n")
    return passed, len(lesson_checks)


def main(argv=None):
    known = lessons_with_exercises()
    parser = ArgumentParser(description="Check your lesson exercises.")
    parser.add_argument("lesson", help=f"the lesson number ({', '.join(known)}) or 'all'")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--solutions", action="store_true", help="check the reference solutions instead")
    group.add_argument("--file", type=Path, help="check this file instead of lessons/exercises/exNN_*.py")
    parser.add_argument(
        "--time-limit",
        type=positive(float),
        default=TIME_LIMIT,
        help=f"seconds an exercise may run (default {TIME_LIMIT}); there is no way to turn the limit off: give more",
    )
    args = parser.parse_args(argv)
    if args.file and (args.file.suffix != ".py" or not args.file.is_file()):
        raise LoraxsError(f"--file {args.file}: give an existing Python file (.py) holding the exercise functions")
    lessons = known if args.lesson == "all" else [args.lesson.zfill(2)]
    if any(lesson not in known for lesson in lessons):
        raise LoraxsError(f"no lesson {args.lesson!r}; the lessons with exercises are {', '.join(known)}")
    totals = [run(lesson, args.file or find_file(lesson, args.solutions), args.time_limit) for lesson in lessons]
    passed, total = (sum(column) for column in zip(*totals))
    return 0 if passed == total else 1


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
