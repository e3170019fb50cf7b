"""Documentation that cannot go stale: every public function and class carries a runnable example (run as a
doctest by the suite), and the API reference builds from the docstrings with pdoc's warnings as errors."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def public_definitions():
    for path in sorted((ROOT / "vanilla_transformer").rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                yield path.relative_to(ROOT), node


def test_every_public_function_and_class_has_a_docstring_with_an_example():
    missing = [f"{path}:{node.lineno} {node.name}" for path, node in public_definitions()
               if ">>>" not in (ast.get_docstring(node) or "")]
    assert not missing, "public names without a runnable example:\n" + "\n".join(missing)


def test_the_readme_links_resolve():
    import re

    readme = (ROOT / "README.md").read_text()
    links = [link for link in re.findall(r"\]\(([^)#]+)", readme) if not link.startswith("http")]
    assert links and all((ROOT / link).exists() for link in links), links
    assert len(readme.encode()) <= 10_500


def test_the_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("pdoc")
    spec = importlib.util.spec_from_file_location("build_api", ROOT / "docs" / "build_api.py")
    build_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_api)
    assert build_api.build(tmp_path, strict=True) == []
    pages = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.html")}
    for module in build_api.modules():
        assert module.replace(".", "/") + ".html" in pages, module
    reference = (tmp_path / "vanilla_transformer" / "generation.html").read_text()
    assert "def generate" in reference or "generate(" in reference
