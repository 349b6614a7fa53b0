"""Stress run of the key-service request fuzzers, beyond CI's 10^5 inputs.

    python -m tests.daemon.keyservice.stress_fuzz --inputs 10000000 --seed 1 --service 200000

Feeds mutated requests to the parser (every input must give a ``Request`` or a 400) and then
through a whole service over an in-memory pool (every reply must be 200/400/401, never 503,
and a good request must still succeed afterwards). Prints one JSON line of counts; exit 1 and
the offending frames (repr) on the first failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

from daemon.keyservice.wire import Request, RequestError, decode_reply, decode_request, \
    encode_request
from tests.daemon.keyservice.test_fuzz import _mutate
from tests.daemon.keyservice.test_service import pair


def parse_stress(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    counts = {"accepted": 0, "refused": 0}
    for _ in range(n):
        frames = _mutate(rng)
        try:
            out = decode_request(frames)
        except RequestError as err:
            if err.status != 400 or not err.message:
                raise SystemExit(f"bad refusal {err.status} for {frames!r}")
            counts["refused"] += 1
        except Exception as exc:      # anything else is a parser bug
            print(f"parser raised {type(exc).__name__} for {frames!r}", file=sys.stderr)
            raise SystemExit(1)
        else:
            if not isinstance(out, Request):
                raise SystemExit(f"parser returned {type(out).__name__} for {frames!r}")
            counts["accepted"] += 1
    return counts


def service_stress(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    a, _ = pair(n_bytes=32 * (n + 16))

    async def run():
        statuses: dict[int, int] = {}
        for _ in range(n):
            frames = _mutate(rng)
            reply = decode_reply(await a.handle("X", frames))
            if reply.status not in (200, 400, 401):
                print(f"status {reply.status} for {frames!r}", file=sys.stderr)
                raise SystemExit(1)
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
        good = decode_reply(await a.handle("X", encode_request("status", b"final",
                                                                {"slave_SAE_ID": "Y"})))
        if good.status != 200:
            raise SystemExit("the service stopped serving good requests")
        return statuses

    return asyncio.run(run())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=1_000_000, help="parser inputs")
    ap.add_argument("--service", type=int, default=100_000, help="inputs through the service")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    parsed = parse_stress(args.inputs, args.seed)
    served = service_stress(args.service, args.seed + 1)
    print(json.dumps({"seed": args.seed, "parser": parsed, "service": served,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
