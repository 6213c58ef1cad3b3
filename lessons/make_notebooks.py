"""
Write each lesson as a Jupyter notebook: lessons/NN_name.py -> lessons/NN_name.ipynb.

    python lessons/make_notebooks.py            write the notebooks (after editing a lesson)
    python lessons/make_notebooks.py --check    fail if a notebook is not what its lesson makes (CI)

The .py file is the source; the notebook is made from it and never edited by hand. A lesson is
cut into cells at its `# %%` lines: the title and the comment block under it become a Markdown
cell (the explanation, with its equations), the code after it a code cell. The comment block
at the top of the file, before the first `# %%`, becomes the notebook's introduction.
Needs nbformat (pip install nbformat, or the project's [test] extra).
"""

import sys
from pathlib import Path

import nbformat

LESSONS = Path(__file__).resolve().parent
HOW_TO_RUN = (
    "*Made from `{source}` by `lessons/make_notebooks.py`: edit the `.py`, not this notebook. "
    "Run it with the repository's package installed (`pip install -e .` in a clone of the repository); "
    "in a hosted notebook service, clone the repository and install it in a first cell.*"
)


def comment_text(lines):
    """Comment lines without their '# ' (a bare '#' is an empty line): Markdown keeps their indented blocks."""
    return "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in lines).strip("\n")


def split_cells(source):
    """[(title or None, comment lines, code lines)]: the part before the first `# %%`, then one per cell."""
    cells, title, comments, code = [], None, [], []
    for line in source.splitlines():
        if line.startswith("# %%"):
            cells.append((title, comments, code))
            title, comments, code = line.removeprefix("# %%").strip(), [], []
        elif line.startswith("#") and not code:  # the comment block that opens a cell
            comments.append(line)
        else:
            code.append(line)
    cells.append((title, comments, code))
    return cells


def notebook_for(lesson):
    name = lesson.stem
    cells = []
    for number, (title, comments, code) in enumerate(split_cells(lesson.read_text(encoding="utf-8"))):
        text = comment_text(comments)
        if title is None:  # the file's header: "Lesson NN: ..." and how to run it
            first, _, rest = text.partition("\n")
            text = f"# {first}\n{rest}\n\n" + HOW_TO_RUN.format(source=f"lessons/{lesson.name}")
        else:
            text = f"## {title}\n\n{text}".strip()
        cells.append(nbformat.v4.new_markdown_cell(text, id=f"{name[:2]}-{number:02d}-text"))
        body = "\n".join(code).strip("\n")
        if body:
            cells.append(nbformat.v4.new_code_cell(body, id=f"{name[:2]}-{number:02d}-code"))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def main(argv):
    stale = []
    for lesson in sorted(LESSONS.glob("[0-9][0-9]_*.py")):
        target, text = lesson.with_suffix(".ipynb"), notebook_for(lesson)
        if "--check" in argv:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote lessons/{target.name}")
    if stale:
        sys.exit(f"error: {', '.join(stale)} not made from the lessons' .py; run python lessons/make_notebooks.py")


if __name__ == "__main__":
    main(sys.argv[1:])
