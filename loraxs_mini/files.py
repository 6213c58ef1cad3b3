"""
Writing files so that a crash never leaves half of one behind.

`atomic_write(path)` hands out a temporary file next to `path`; only when the
block finishes without an error is it renamed onto `path`. `os.replace` is
atomic on one file system, so `path` is either the old file, absent, or the
complete new one. Checkpoints, adapters, downloads and results all go
through here.
"""

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, mode="wb"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(temporary, mode) as file:
            yield file
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # still there only if something failed
