"""Config files for the daemon tests: the shipped example, made loadable in a temp directory."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "systemd" / "node.example.toml"
KEYSERVICE_SECTION = "\n# The key service"     # the example's last section begins here


def write_key_files(directory: Path, *names: str) -> None:
    """Placeholder key files (the peer channel parses them; the config only checks access)."""
    keys = directory / "keys"
    keys.mkdir(exist_ok=True)
    for name in names:
        path = keys / name
        path.write_bytes(b"placeholder key file for tests\n")
        os.chmod(path, 0o600)


def write_keyservice_keys(directory: Path) -> None:
    """The key service reads its keypair and its clients' public keys at start: real ones."""
    from daemon.curve_keys import generate_keypair
    for sub, name in (("keys", "keyservice"), ("clients", "recipient")):
        (directory / sub).mkdir(exist_ok=True)
        if not (directory / sub / f"{name}.key").exists():
            generate_keypair(directory / sub, name)


def example_in(directory: Path, *, keyservice: bool = False) -> Path:
    """The example config with its key files beside it and its state under ``directory``;
    without its ``[keyservice]`` table unless asked (a node test then binds no service port)."""
    write_key_files(directory, "alice.key", "alice-bob.auth", "bob.key", "bob.key_secret")
    text = EXAMPLE.read_text()
    if keyservice:
        write_keyservice_keys(directory)
    else:
        text = text[:text.index(KEYSERVICE_SECTION)]
        assert "[keyservice]" not in text
    text = text.replace('"/var/lib/qkd-node/keys.sqlite"', f'"{directory}/keys.sqlite"')
    text = text.replace('"/var/lib/qkd-node"', f'"{directory}/state"')
    text = text.replace('"/run/qkd-node/admin.sock"', f'"{directory}/admin.sock"')
    path = directory / "node.toml"
    path.write_text(text)
    return path


def example_data(directory: Path, *, keyservice: bool = False) -> dict:
    return tomllib.loads(example_in(directory, keyservice=keyservice).read_text())


def dump_toml(data: dict) -> str:
    """Enough TOML for the test configs: tables, arrays of tables, strings, numbers, bools."""
    lines: list[str] = []

    def scalar(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, float):
            return "nan" if v != v else "inf" if v == float("inf") else \
                "-inf" if v == float("-inf") else repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        return str(v)

    def table(prefix: str, d: dict, array: bool = False) -> None:
        scalars = {k: v for k, v in d.items() if not isinstance(v, dict)
                   and not (isinstance(v, list) and v and isinstance(v[0], dict))}
        if prefix:
            lines.append(f"[[{prefix}]]" if array else f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{k} = {scalar(v)}")
        for k, v in d.items():
            name = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                table(name, v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    table(name, item, array=True)

    table("", data)
    return "\n".join(lines) + "\n"
