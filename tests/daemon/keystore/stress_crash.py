"""Stress run of the kill -9 tests: ``python -m tests.daemon.keystore.stress_crash --kills N``.

Prints one JSON line per scenario with what survived; exits 1 on the first broken invariant.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile

import numpy as np

from tests.daemon.keystore.crash_harness import run_pair, run_single


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for name, run in (("single", run_single), ("pair", run_pair)):
        with tempfile.TemporaryDirectory() as tmp:
            stats = run(pathlib.Path(tmp), args.kills, rng)
        print(json.dumps({"scenario": name, "kills": args.kills, **stats}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
