"""The demo launcher with FAKE nodes (tests only): ``python -m tests.daemon.launch_with_fakes``
takes the launcher's flags; its nodes are ``tests.daemon.fake_node`` processes, which abort every
block in the attack run (fake roles know nothing of Eve). Their in-memory store cannot serve
keys, so they run without a key service (``keyservice=False``)."""

from __future__ import annotations

import sys

from daemon import launch


def fake_node_command(run: str) -> list[str]:
    extra = ["--abort-all"] if run != "honest" else []
    return [sys.executable, "-m", "tests.daemon.fake_node", *extra]


if __name__ == "__main__":
    sys.exit(launch.main(sys.argv[1:], node_command=fake_node_command, keyservice=False))
