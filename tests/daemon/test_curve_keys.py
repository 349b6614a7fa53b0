"""qkd-node keygen: safe file modes, no overwrite, and a loader that refuses exposed secrets."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth

from daemon import cli
from daemon.curve_keys import KeyFileError, generate_keypair, load_keypair, load_public_key


def test_keygen_writes_a_private_secret_and_a_public_key(tmp_path, capsys):
    assert cli.main(["keygen", "--out", str(tmp_path), "--name", "alice"]) == 0
    public, secret = tmp_path / "alice.key", tmp_path / "alice.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    pair = load_keypair(secret)
    assert load_public_key(public) == pair.public
    assert zmq.curve_public(pair.secret) == pair.public       # the two halves belong together
    out = capsys.readouterr().out
    assert pair.public.decode() in out and pair.secret.decode() not in out
    assert pair.secret.decode() not in repr(pair)
    # files are in the ZeroMQ certificate layout
    assert zmq.auth.load_certificate(secret) == (pair.public, pair.secret)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_keygen_never_overwrites(tmp_path, capsys):
    assert cli.main(["keygen", "--out", str(tmp_path), "--name", "n"]) == 0
    before = (tmp_path / "n.key_secret").read_bytes()
    assert cli.main(["keygen", "--out", str(tmp_path), "--name", "n"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists already" in err and "n.key" in err
    assert (tmp_path / "n.key_secret").read_bytes() == before


@pytest.mark.parametrize("argv, message", [
    (["--out", "/nonexistent-dir", "--name", "x"], "does not exist"),
    (["--out", ".", "--name", "../evil"], "is not 1-64 letters"),
])
def test_keygen_bad_input_exits_2_with_one_line(argv, message, capsys):
    assert cli.main(["keygen", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_keygen_missing_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["keygen", "--name", "x"])
    assert exc.value.code == 2


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_loader_refuses_a_secret_others_can_access(tmp_path, mode):
    _, secret = generate_keypair(tmp_path, "k")
    os.chmod(secret, mode)
    with pytest.raises(KeyFileError) as exc:
        load_keypair(secret)
    msg = str(exc.value)
    assert str(secret) in msg and f"{mode:04o}" in msg and "\n" not in msg


def test_loader_errors_name_the_file(tmp_path):
    with pytest.raises(KeyFileError, match="missing.key_secret"):
        load_keypair(tmp_path / "missing.key_secret")
    bad = tmp_path / "bad.key_secret"
    bad.write_text("nothing here")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match="bad.key_secret lacks"):
        load_keypair(bad)
