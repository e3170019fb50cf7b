"""Build the API reference of vanilla_transformer from its docstrings (pdoc, Google-style docstrings).

    python docs/build_api.py                 # writes docs/api/
    python docs/build_api.py --output /tmp/api --strict   # warnings (bad docstrings, broken links) are errors

The reference documents every public module, class and function of the package; it is generated, not
committed.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def modules() -> list[str]:
    """The package and every submodule (pdoc would otherwise stop at the names of ``__all__``)."""
    import pkgutil

    import vanilla_transformer

    return ["vanilla_transformer"] + sorted(
        info.name for info in pkgutil.walk_packages(vanilla_transformer.__path__, "vanilla_transformer."))


def build(output: Path, strict: bool = False) -> list[str]:
    """Render the reference into ``output``; return pdoc's warnings (raise on them when ``strict``)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="google", show_source=False, search=True,
                          footer_text="vanilla-transformer API reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*modules(), output_directory=output)
    problems = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "pdoc" in w.filename]
    if strict and problems:
        raise RuntimeError("pdoc warnings:\n" + "\n".join(problems))
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("api"))
    parser.add_argument("--strict", action="store_true", help="fail on any pdoc warning")
    args = parser.parse_args(argv)
    problems = build(args.output, strict=args.strict)
    for problem in problems:
        print(problem, file=sys.stderr)
    pages = sorted(args.output.rglob("*.html"))
    print(f"wrote {len(pages)} pages to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
