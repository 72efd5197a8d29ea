"""The layout's rules (jobs/__init__.py): jobs/ holds only jobs; the shared rooms import only the rooms before them
(platform -> lake -> learning), never a job; no import cycles among the modules."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("platform", "lake", "learning")  # each may import those before it, and itself


def jobs_imported_by(path: Path) -> set[str]:
    """The jobs.* modules a file imports (at any depth: lazy imports in functions count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jobs":
            if node.module == "jobs" or node.module in {f"jobs.{room}" for room in ROOMS}:
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "jobs"}
    return found


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_jobs_top_level_holds_only_jobs_each_with_a_command_line():
    for path in sorted((ROOT / "jobs").glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert 'if __name__ == "__main__":' in text, f"{path.name} is not a job: move it into a room"
    rooms = {p.name for p in (ROOT / "jobs").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == set(ROOMS)
    for room in ROOMS:
        doc = ast.get_docstring(ast.parse((ROOT / "jobs" / room / "__init__.py").read_text()))
        assert doc and "May import" in doc, (
            f"jobs/{room}/__init__.py must say what lives there and may import"
        )


def test_rooms_import_only_the_rooms_before_them_and_never_a_job():
    wrong = []
    for rank, room in enumerate(ROOMS):
        allowed = {f"jobs.{r}" for r in ROOMS[: rank + 1]}
        for path in sorted((ROOT / "jobs" / room).glob("*.py")):
            for target in jobs_imported_by(path):
                if ".".join(target.split(".")[:2]) not in allowed:
                    wrong.append(f"{module_name(path)} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles_among_the_modules():
    graph = {}
    for path in sorted((ROOT / "jobs").rglob("*.py")):
        if "__pycache__" not in path.parts:
            name = module_name(path).removesuffix(".__init__")
            graph[name] = {t for t in jobs_imported_by(path) if t != name}
    seen, stack = set(), []

    def visit(node: str) -> None:
        if node in stack:
            raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(node) :], node]))
        if node in seen or node not in graph:
            return
        stack.append(node)
        for target in sorted(graph[node]):
            visit(target)
        stack.pop()
        seen.add(node)

    for node in sorted(graph):
        visit(node)


def test_every_job_answers_help(capsys):
    import importlib

    import pytest

    for path in sorted((ROOT / "jobs").glob("*.py")):
        if path.name == "__init__.py":
            continue
        job = importlib.import_module(f"jobs.{path.stem}")
        with pytest.raises(SystemExit) as done:
            job.main(["--help"])
        assert done.value.code == 0, path.name
        assert "usage:" in capsys.readouterr().out, path.name
