"""The package's shape: imports flow one way (no cycles), no module uses another's underscore names, and
every function fits on a screen. Built from the source (AST), so it also sees imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vanilla_transformer"
MAX_FUNCTION_LINES = 50  # ~a screen of code: the body without its docstring


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported package module, names taken from it) for every import in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name in modules]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            for alias in node.names:  # `from . import bert` imports the submodule
                if f"{target}.{alias.name}" in modules:
                    found.append((f"{target}.{alias.name}", []))
                elif target in modules:
                    found.append((target, [alias.name]))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: {target for target, _ in imports_of(name, path, modules) if target != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 20 and graph["vanilla_transformer.hub"]  # the scan sees the package
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_only_the_public_package_and_the_cli_import_the_model_classes():
    importers = {name for name, targets in import_graph().items() if "vanilla_transformer.modeling" in targets}
    assert importers <= {"vanilla_transformer", "vanilla_transformer.cli"}, importers


def test_no_module_imports_another_modules_underscore_names():
    modules = package_modules()
    scripts = {path.relative_to(ROOT).as_posix(): path  # keyed by path: file names repeat across folders
               for pattern in ("examples/**/*.py", "benchmarks/*.py", "tests/**/*.py")
               for path in ROOT.glob(pattern)}
    offenders = []
    for name, path in [*modules.items(), *scripts.items()]:
        for target, names in imports_of(name, path, modules):
            offenders += [f"{path.relative_to(ROOT)}: {name} from {target}" for name in names
                          if name.startswith("_") and name != "__version__"]
        tree = ast.parse(path.read_text())
        aliases = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for alias in node.names if alias.name in ("hub", "generation", "training", "modeling")
                   or alias.name.startswith("vanilla_transformer")}
        offenders += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value.id}.{node.attr}"
                      for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not offenders, "underscore names used across modules:\n" + "\n".join(offenders)


def test_functions_fit_on_a_screen():
    long = []
    for path in [*PACKAGE.rglob("*.py"), *ROOT.glob("examples/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                length = node.end_lineno - body[0].lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long, "functions over a screen:\n" + "\n".join(long)


def test_child_processes_import_the_package_from_this_checkout():
    """conftest puts this checkout first on PYTHONPATH: the scripts the tests start test this code, not whatever
    ``pip install -e`` last pointed at (a stale install once failed every subprocess test with ImportError)."""
    import subprocess
    import sys

    code = "import importlib.util; print(importlib.util.find_spec('vanilla_transformer').origin)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=60)
    assert Path(found.stdout.strip()) == PACKAGE / "__init__.py", found


MAX_MODULE_LINES = 600  # a room of one job: past this a module is holding two


def test_every_module_fits_one_job():
    too_long = {name: length for name, path in package_modules().items()
                if (length := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split by job): {too_long}"


# Names defined at the top of several modules on purpose: the converter families (convert/bert.py,
# convert/marian.py, and the dispatch in convert/__init__.py) implement one interface, and the CLI's command
# handler `export` is the command line of serving.export.
SHARED_NAMES = {"weight_map", "config_from_transformers", "to_transformers_checkpoint", "export"}


def test_one_name_one_meaning_across_modules():
    defined: dict[str, list[str]] = {}
    for name, path in package_modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                defined.setdefault(node.name, []).append(name)
    repeated = {name: modules for name, modules in defined.items() if len(modules) > 1 and name not in SHARED_NAMES}
    assert not repeated, f"public names defined in several modules (give each meaning its own name): {repeated}"


# ------------------------------------------------------------------------------------------ the example scripts
EXAMPLES = ROOT / "examples"


def example_imports(path: Path) -> set[str]:
    """The example modules (``_common``, ``translation.*``, the scripts) that an example file imports."""
    local = {script.stem for script in EXAMPLES.glob("*.py")} | {"translation"}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in local}
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in local:
            found.add(node.module)
    return found


def test_the_examples_import_one_way():
    """Scripts (run_translation.py, ...) -> the recipe's modules (examples/translation/) -> _common ->
    vanilla_transformer: no lower layer imports a higher one, and the recipe's modules import each other
    without a cycle."""
    scripts = {script.stem for script in EXAMPLES.glob("*.py")} - {"_common"}
    graph = {f"translation.{path.stem}": example_imports(path) for path in EXAMPLES.glob("translation/*.py")}
    graph["_common"] = example_imports(EXAMPLES / "_common.py")
    assert graph["translation.training"] >= {"_common", "translation.data"}  # the scan sees the imports
    upward = [f"{name} imports {target}" for name, targets in graph.items() for target in targets
              if target.split(".")[0] in scripts or (name == "_common" and target.startswith("translation"))]
    assert not upward, "imports against the direction scripts -> translation -> _common:\n" + "\n".join(upward)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_translation_recipe_modules_fit_one_job():
    too_long = {path.name: length for path in EXAMPLES.glob("translation/*.py")
                if (length := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not too_long, f"examples/translation modules over {MAX_MODULE_LINES} lines (split by job): {too_long}"
