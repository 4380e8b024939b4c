"""The import flow is one-way: data → models → train → checkpoint → use, and no module imports itself back.

Read from the source (every ``import``, at module level or inside a function), not from what an
interpreter happens to load, so a lazy import against the flow fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "facegan"

# Lowest first; a module may import its own layer and the layers below it, never one above.
# "checkpoint" is what training writes and every use reads (checkpoint files, saved models): it sits
# below training, so that nothing which uses a trained model imports training code.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"errors", "fileio", "checks", "device", "plots", "viz", "dist", "launch", "facemodels", "onnx_export"}),
    ("data", {"data"}),
    ("models", {"models"}),
    ("metrics", {"metrics"}),
    ("config", {"config"}),
    ("checkpoint", {"checkpoint", "saved"}),
    ("train", {"train"}),
    ("use", {"sample", "upscale", "export", "project", "report", "serve", "anonymize", "measure", "identity", "faceset",
             "testpack"}),
    ("cli", {"cli", "__main__"}),
]
RANK = {top: i for i, (_, tops) in enumerate(LAYERS) for top in tops}


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The facegan modules a file imports (``from facegan import x`` counts as module facegan.x when it is one)."""
    out: set[str] = set()
    package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("facegan"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("facegan"):
                continue
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in out if m in known}


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only: never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1]) if len(parts) > 1 else None  # the package's face (facegan/__init__) is outside the flow


def test_every_module_has_a_layer():
    missing = sorted(m for m in _modules() if m != "facegan" and _layer(m) is None)
    assert not missing, f"add these to a layer in LAYERS: {missing}"


def test_no_import_runs_against_the_flow():
    against = [f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
               for m, deps in sorted(_graph().items()) if _layer(m) is not None
               for d in sorted(deps) if _layer(d) is not None and _layer(d) > _layer(m)]
    assert not against, "\n".join(against)


def test_nothing_that_uses_a_trained_model_imports_training_code():
    graph = _graph()
    use = [m for m in graph if _layer(m) is not None and LAYERS[_layer(m)][0] in ("use", "checkpoint")]
    for m in use:
        seen, todo = set(), [m]
        while todo:  # everything m imports, directly or not
            for d in graph[todo.pop()] - seen:
                seen.add(d)
                todo.append(d)
        assert not [d for d in seen if d.startswith("facegan.train")], (m, sorted(d for d in seen if d.startswith("facegan.train")))


def test_there_are_no_import_cycles():
    graph, cycles = _graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if d == "facegan":
                continue  # the package's face re-exports the API; importing a submodule runs it first anyway
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(" → ".join(c) for c in cycles)


def test_the_checker_sees_a_violation():
    """The checks above can fail: the graph holds the edges they judge."""
    graph = _graph()
    assert "facegan.models.dcgan" in graph["facegan.train.loop"]
    assert "facegan.saved" in graph["facegan.cli.faces"] and "facegan.cli.app" in graph["facegan.cli.train"]
    assert _layer("facegan.train.loop") > _layer("facegan.checkpoint") > _layer("facegan.models.dcgan")
