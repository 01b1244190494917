"""The project's import structure, read from the sources (ast, function-level imports included):
no import cycle among the modules of bench/ and plugins/, and inference code (codecs, coding,
weights, models) never imports training code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "plugins")


def project_modules() -> dict[str, Path]:
    """Dotted name -> source file of every module under :data:`PACKAGES`."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> dict[str, bool]:
    """Project modules that ``name`` imports, each with ``True`` when some import of it is at
    module level (``False``: only inside functions). ``from X import Y`` counts as an import of
    ``X.Y`` when that is a module, else of ``X``; imports under ``if TYPE_CHECKING:`` do not
    count."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, bool] = {}

    def add(target: str, top: bool) -> None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found[target] = found.get(target, False) or top

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # annotations only, never executed
            inner = top and not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, top)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    add(full if full in modules else base, top)
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def import_graph() -> dict[str, dict[str, bool]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            advanced = False
            for target in edges:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(graph[target])))
                    advanced = True
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def is_training(module: str) -> bool:
    """Training code: a ``training`` package or a module named for training (``train``...)."""
    parts = module.split(".")
    return "training" in parts or parts[-1].startswith("train")


def test_the_graph_sees_function_level_imports():
    graph = import_graph()
    learned = graph["plugins.learned"]
    assert "bench" in learned and learned["bench"]
    # the weights package re-exports its parts; model_io reads the coding package
    assert {"plugins.learned.weights.specs", "plugins.learned.weights.loading"} <= set(
        graph["plugins.learned.weights"]
    )
    assert "plugins.learned.coding.latent" in graph["plugins.learned.model_io"]
    assert cycles({"a": {"b": True}, "b": {"c": False}, "c": {"a": True}, "d": {}}) == [
        ["a", "b", "c"]
    ]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_inference_code_never_imports_training_code():
    """Codecs, coding, weights and models load without training code. A plugin's ``__init__``
    (where ``bench train NAME`` is registered) may import it inside a function only."""
    wrong = []
    for module, targets in import_graph().items():
        if not module.startswith("plugins.") or is_training(module):
            continue
        is_plugin_root = module.count(".") == 1
        for target, top in targets.items():
            if is_training(target) and (top or not is_plugin_root):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def plugin_of(module: str) -> str | None:
    """The plugin a module belongs to (``plugins.hc.codec`` -> ``hc``), else None."""
    parts = module.split(".")
    return parts[1] if parts[0] == "plugins" and len(parts) > 1 else None


def test_a_plugin_imports_no_other_plugin_but_the_learned_library():
    """A plugin may use ``bench`` and the shared learned library (``plugins.learned``), never
    another plugin: removing one plugin leaves the others working. The learned library imports
    no plugin at all."""
    wrong = []
    for module, targets in import_graph().items():
        own = plugin_of(module)
        if own is None:
            continue
        for target in targets:
            other = plugin_of(target)
            if other is None or other == own:
                continue
            if other != "learned" or own == "learned":
                wrong.append(f"{module} -> {target}")
    assert wrong == []
