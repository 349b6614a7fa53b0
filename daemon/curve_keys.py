"""CurveZMQ keypairs of a node: ``qkd-node keygen`` writes them, the peer channel loads them.

Files use the ZeroMQ certificate layout (as ``zmq.auth`` writes them, so other ZeroMQ tools can
read them): ``NAME.key`` holds the public key (give it to the peer; mode 0644) and
``NAME.key_secret`` both keys (mode 0600). Both are created atomically and never overwrite an
existing file. The loader refuses a secret key file that group or others may access, naming the
file, so a leaked key is not silently used.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Z85_KEY_RE = re.compile(rb'^\s*(public|secret)-key\s*=\s*"([0-9A-Za-z.\-:+=^!/*?&<>()\[\]{}@%$#]{40})"\s*$')

_PUBLIC_TEMPLATE = """#   ZeroMQ CURVE Public Certificate, written by qkd-node keygen
#   Exchange securely, or use a secure mechanism to verify the contents
#   of this file after exchange. Store public certificates in your home
#   directory, in the .curve subdirectory.

metadata
curve
    public-key = "{public}"
"""

_SECRET_TEMPLATE = """#   ZeroMQ CURVE **Secret** Certificate, written by qkd-node keygen
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

metadata
curve
    public-key = "{public}"
    secret-key = "{secret}"
"""


class KeyFileError(Exception):
    """A keypair file is missing, unsafe or unreadable; the message names the file."""


@dataclass(frozen=True)
class KeyPair:
    public: bytes     # Z85, 40 bytes
    secret: bytes     # Z85, 40 bytes

    def __repr__(self) -> str:          # never show the secret half
        return f"KeyPair(public={self.public!r})"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_file(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file with ``mode`` from its first byte on, then link it into
    place so that no reader ever sees it half written or with a wider mode."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)          # the umask may have narrowed it; it cannot widen it
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileError(f"key file {path} exists already; refusing to overwrite it") from None
    finally:
        os.unlink(tmp)


def generate_keypair(out_dir, name: str) -> tuple[Path, Path]:
    """Write a new keypair as ``out_dir/NAME.key`` and ``out_dir/NAME.key_secret``."""
    import zmq        # libzmq's own key generator (libsodium or tweetnacl inside)

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise KeyFileError(f"key name {name!r} is not 1-64 letters, digits, '_', '.', '-' "
                           "starting with a letter or digit")
    out = Path(out_dir)
    if not out.is_dir():
        raise KeyFileError(f"output directory {out} does not exist")
    public_path = out / f"{name}.key"
    secret_path = out / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            raise KeyFileError(f"key file {p} exists already; refusing to overwrite it")
    public, secret = zmq.curve_keypair()
    _create_file(secret_path, _SECRET_TEMPLATE.format(public=public.decode(),
                                                      secret=secret.decode()), 0o600)
    _create_file(public_path, _PUBLIC_TEMPLATE.format(public=public.decode()), 0o644)
    _fsync_dir(out)
    return public_path, secret_path


def _read_keys(path: Path) -> dict[str, bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    keys = {}
    for line in data.splitlines():
        m = Z85_KEY_RE.match(line)
        if m:
            keys[m.group(1).decode()] = m.group(2)
    return keys


def load_public_key(path) -> bytes:
    """The Z85 public key in a ``.key`` (or ``.key_secret``) file."""
    path = Path(path)
    keys = _read_keys(path)
    if "public" not in keys:
        raise KeyFileError(f"key file {path} holds no public-key line")
    return keys["public"]


def load_keypair(path) -> KeyPair:
    """The keypair in a ``.key_secret`` file; refused unless only its owner may access it."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise KeyFileError(f"cannot read secret key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"secret key file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(f"secret key file {path} is accessible to other users "
                           f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}")
    keys = _read_keys(path)
    if "secret" not in keys or "public" not in keys:
        raise KeyFileError(f"secret key file {path} lacks a public-key or secret-key line")
    return KeyPair(keys["public"], keys["secret"])


def main(argv: list[str] | None = None) -> int:
    """``qkd-node keygen --out DIR --name NAME``."""
    parser = argparse.ArgumentParser(
        prog="qkd-node keygen",
        description="write a CurveZMQ keypair: NAME.key (public, for the peer) and "
                    "NAME.key_secret (mode 0600, stays on this node)")
    parser.add_argument("--out", required=True, metavar="DIR", help="existing directory")
    parser.add_argument("--name", required=True, metavar="NAME", help="file name stem")
    args = parser.parse_args(argv)
    try:
        public_path, secret_path = generate_keypair(args.out, args.name)
    except (KeyFileError, OSError) as exc:
        print(f"qkd-node keygen: {exc}", file=sys.stderr)
        return 2
    print(f"public key: {public_path} ({load_public_key(public_path).decode()})")
    print(f"secret key: {secret_path} (mode 0600; keep it on this node)")
    return 0
