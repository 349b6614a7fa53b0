"""Run every benchmark module (``bench/bench_*.py``) or those named on the command line."""

from __future__ import annotations

import importlib
import pathlib
import sys


def main(argv: list[str]) -> int:
    here = pathlib.Path(__file__).parent
    names = argv or sorted(p.stem for p in here.glob("bench_*.py"))
    failed = []
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"# {name}", file=sys.stderr, flush=True)
        try:
            mod.main()
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            print(f"# {name} failed: {exc!r}", file=sys.stderr, flush=True)
            failed.append(name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
