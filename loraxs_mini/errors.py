"""
One exception type for mistakes a student can fix.

Every error this package raises on purpose (a missing file, a malformed
checkpoint, a rank that does not fit a layer, ...) is a `LoraxsError` whose
message says what was wrong and what to do instead. The command-line tools
(`train.py`, the lessons, the benchmark) print that message on one line and
exit with status 1, so bad input never ends in a traceback. Anything else that
escapes is a bug in this package and keeps its traceback.
"""

import argparse
import sys
import warnings
from contextlib import contextmanager


class LoraxsError(Exception):
    """A clear, user-facing error: the message alone tells the user what to do."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are LoraxsErrors like any other: one error: line, exit status 1 (argparse: 2)."""

    def error(self, message):
        raise LoraxsError(f"{message} (--help lists every flag)")


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
