"""
One exception type for mistakes a student can fix.

Every error this package raises on purpose (a missing file, a malformed
checkpoint, a rank that does not fit a layer, ...) is a `LoraxsError` whose
message says what was wrong and what to do instead. The command-line tools
(`train.py`, the lessons, the benchmark) print that message on one line and
exit with status 1, so bad input never ends in a traceback (argparse's own
mistakes too: cli.ArgumentParser); a notebook shows it as one line too. Anything else that escapes is a bug in
this package and keeps its traceback. `is_whole` and `is_number` are the
checks every boundary uses for whole numbers and numbers (a bool is neither).
"""

import sys
import warnings
from contextlib import contextmanager


class LoraxsError(Exception):
    """A clear, user-facing error: the message alone tells the user what to do."""

    def _render_traceback_(self):
        """In a notebook, the message as one line too: IPython shows what this returns in place of a traceback."""
        return [f"error: {self}"]


def is_whole(value):
    """An int, and not a bool (True is 1 to Python, but never a rank)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextmanager
def friendly_errors():
    """
    Turn a `LoraxsError` (or Ctrl-C) into one line on stderr and exit status 1,
    and print warnings as one line, `warning: ...`, without Python's source line.
    """
    format_warning = warnings.formatwarning
    warnings.formatwarning = lambda message, *_: f"warning: {message}\n"
    try:
        yield
    except LoraxsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    finally:
        warnings.formatwarning = format_warning
