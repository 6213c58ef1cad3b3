"""
The lessons' pictures: drawn with matplotlib when it is installed, shown inline in a notebook, and written to
out/lessons/<name>.png (or the folder $LORAXS_MINI_FIGURES names) when a lesson runs as a script, quick mode too.
Without matplotlib a lesson prints the same numbers and says how to get the picture.
"""

import os
import sys
from pathlib import Path

FOLDER = Path(os.environ.get("LORAXS_MINI_FIGURES", Path("out") / "lessons"))


def pyplot():
    """matplotlib.pyplot, or None (after saying how to get it)."""
    try:
        import matplotlib

        if "ipykernel" not in sys.modules:
            matplotlib.use("Agg")  # a script draws to a file, not to a window
        import matplotlib.pyplot as plt
    except ImportError:
        print("(pip install matplotlib to see this as a picture)")
        return None
    return plt


def show(figure, name):
    """Inline in a notebook; as a script, a file: out/lessons/<name>.png (its path printed)."""
    plt = pyplot()
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    if "ipykernel" in sys.modules:
        plt.show()
        return None
    FOLDER.mkdir(parents=True, exist_ok=True)
    path = FOLDER / f"{name}.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"figure: {path}")
    return path
