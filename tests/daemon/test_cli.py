"""The operator and client command lines: exit codes and messages, never tracebacks."""

import json

import pytest

from daemon import cli, qkdctl


def test_qkd_node_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "sim" in capsys.readouterr().out


def test_qkd_node_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_qkdctl_lists_every_driver_family(capsys):
    assert qkdctl.main(["drivers", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)["drivers"]
    for expected in ("id120", "dicon-mems", "agiltron-switch", "gp-polarization", "qkd-board"):
        assert expected in names


def test_qkdctl_unknown_driver_names_the_known_ones(capsys):
    assert qkdctl.main(["status", "--driver", "no-such", "--url", "loop://"]) == 2
    err = capsys.readouterr().err
    assert "no-such" in err and "id120" in err


def test_qkdctl_unreachable_device_is_a_clear_error(capsys):
    # Nothing listens on port 9 of loopback (discard service is not run here).
    rc = qkdctl.main(["status", "--driver", "dicon-mems", "--url", "socket://127.0.0.1:9",
                      "--timeout-s", "0.5"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "127.0.0.1:9" in err and "Traceback" not in err


def test_qkdctl_rejects_non_positive_timeout(capsys):
    with pytest.raises(SystemExit) as exc:
        qkdctl.main(["status", "--driver", "id120", "--url", "x", "--timeout-s", "0"])
    assert exc.value.code == 2
    assert "outside the accepted range (0, 3600] s" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", "3601", "-1", "1e-400", "ten"])
def test_qkdctl_non_finite_and_huge_timeouts_are_usage_errors(capsys, value):
    with pytest.raises(SystemExit) as exc:
        qkdctl.main(["status", "--driver", "id120", "--url", "socket://127.0.0.1:9",
                     f"--timeout-s={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert value in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("driver, url", [
    ("id120", "TCPIP::127.0.0.1::99999::SOCKET"), ("id120", "TCPIP::garbage"),
    ("qkd-board", "socket://127.0.0.1:0"), ("qkd-board", "socket://nowhere"),
    ("dicon-mems", "garbage"), ("dicon-mems", "rfc2217://h:70000"), ("oz-epc", "bogus://x"),
])
def test_qkdctl_malformed_url_is_one_line_and_exit_2(capsys, driver, url):
    assert qkdctl.main(["status", "--driver", driver, "--url", url, "--timeout-s", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(url) in err and "expected" in err


def test_status_records_become_plain_json():
    import enum
    from dataclasses import dataclass

    class Role(enum.IntEnum):
        ALICE = 1

    @dataclass
    class Inner:
        s1: float

    @dataclass
    class Outer:
        role: Role
        target: Inner
        counts: tuple

    out = qkdctl._as_jsonable(Outer(Role.ALICE, Inner(0.5), (1, 2)))
    assert out == {"role": "ALICE", "target": {"s1": 0.5}, "counts": [1, 2]}
    json.dumps(out)
