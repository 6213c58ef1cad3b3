"""The package's shape: modules import downward only, and the repository's folders are found or clearly missed."""

import ast

import pytest

from conftest import ROOT
from loraxs_mini import LoraxsError, data

PACKAGE = ROOT / "loraxs_mini"


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path):
    """The package modules `path` imports, anywhere in the file (late imports inside functions too)."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            found |= {f"{base}.{alias.name}" for alias in node.names} | {base}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loraxs_mini"):
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_import_cycle_in_the_package():
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}

    def reaches(start, goal, seen):
        for nxt in graph[start] - seen:
            if nxt == goal or reaches(nxt, goal, seen | {nxt}):
                return True
        return False

    # A package's __init__ gathers its modules, so "adapters.lora -> adapters" is a module reaching up into its
    # own package's index: a cycle too, and the one most easily written by accident.
    cycles = sorted(name for name in graph if reaches(name, name, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_shipped_tasks_are_found_from_the_repository_and_missed_clearly_elsewhere(monkeypatch, tmp_path):
    for inside in (ROOT, ROOT / "lessons", ROOT / "lessons" / "exercises"):
        monkeypatch.chdir(inside)
        assert data.shipped_tasks() == ROOT / "data"
    monkeypatch.chdir(tmp_path)  # outside any clone
    with pytest.raises(LoraxsError, match="repository's data/ folder, and none was found"):
        data.load_task("sentiment")
    with pytest.raises(LoraxsError, match="no task or data file 'sentiment', and no tasks folder"):
        data.load_task("sentiment", tmp_path / "nowhere")
    assert data.load_task("plural", ROOT / "data").name == "plural"  # the caller says where


def test_no_module_of_the_package_finds_a_repository_folder_by_its_own_path():
    for path in PACKAGE.rglob("*.py"):
        assert "parents[1]" not in path.read_text(), f"{path} reaches outside the package"


def test_a_method_file_opens_on_its_method_and_loraxs_py_stays_short():
    """Its paper and equation in a docstring of at most 30 lines, then __init__; loraxs.py whole on a few screens."""
    for name in ("lora", "vera", "loraxs", "tinylora", "lorasb"):
        path = PACKAGE / "adapters" / f"{name}.py"
        tree = ast.parse(path.read_text())
        assert len(ast.get_docstring(tree, clean=False).strip().splitlines()) <= 30, path.name
        init = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "__init__")
        assert init.lineno < 80, f"{path.name}: __init__ at line {init.lineno}"
    assert len((PACKAGE / "adapters" / "loraxs.py").read_text().splitlines()) <= 140


def test_train_py_shows_the_run_in_a_short_main_and_few_names():
    tree = ast.parse((ROOT / "train.py").read_text())
    main = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "main")
    assert main.end_lineno - main.lineno + 1 <= 55
    names = [
        alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("loraxs_mini")
        for alias in node.names
    ]
    assert len(names) <= 20, names
