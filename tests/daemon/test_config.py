"""node.toml validation: the example loads; each bad config is one line naming file and key."""

from __future__ import annotations

import copy
import os

import pytest

from daemon import cli
from daemon import config as cfg
from daemon.control.settings import ControlSettings
from tests.daemon.configs import dump_toml, example_data, example_in


def test_the_shipped_example_loads(tmp_path):
    conf = cfg.load(example_in(tmp_path, keyservice=True))
    assert conf.node_id == "bob"
    (link,) = conf.links
    assert (link.id, link.role, link.protocol) == ("alice-bob", "bob", "bb84-decoy")
    assert link.peer.bind is False and link.peer.endpoint == "tcp://127.0.0.1:7301"
    assert link.peer.public_key_file == tmp_path / "keys" / "alice.key"
    assert link.device("board").driver == "qkd-board"
    assert {d.name for d in link.devices} == {"board", "detector", "switch"}
    assert link.policy.block_pulses == 2_000_000_000 and link.policy.qber_tol == 0.05
    assert conf.keystore.capacity_bits == 10**9 and conf.keystore.key_size_bits == 256
    assert conf.admin_socket == tmp_path / "admin.sock" and conf.admin_socket_mode == 0o600
    assert link.control == ControlSettings()         # the example shows the defaults


def test_the_example_key_service_is_read_with_its_clients(tmp_path):
    from daemon.curve_keys import load_keypair, load_public_key
    conf = cfg.load(example_in(tmp_path, keyservice=True))
    ks = conf.keyservice
    assert (ks.endpoint, ks.link_id, ks.kme_id, ks.peer_kme_id) == (
        "tcp://0.0.0.0:7200", "alice-bob", "KME-bob", "KME-alice")
    pair = load_keypair(tmp_path / "keys" / "keyservice.key_secret")
    assert (ks.public_key, ks.secret_key) == (pair.public, pair.secret)
    assert ks.clients == {load_public_key(tmp_path / "clients" / "recipient.key"): "recipient"}
    assert ks.remote_saes == frozenset({"dispatcher"}) and ks.reserve_ahead == 256
    assert pair.secret.decode() not in repr(conf)        # the secret key is never shown
    data = example_data(tmp_path, keyservice=True)
    del data["keyservice"]
    path = tmp_path / "no-ks.toml"
    path.write_text(dump_toml(data))
    assert cfg.load(path).keyservice is None             # a node that serves no keys


def test_link_control_settings_reach_the_supervisor(tmp_path):
    from daemon.control.supervisor import ControlSupervisor
    data = example_data(tmp_path, keyservice=True)
    path = tmp_path / "ctl.toml"
    data["link"][0]["control"] = {"switch_port": 3, "detector_period_s": 0.25,
                                  "light_floor_hz": 5e3, "steer_twist": False}
    path.write_text(dump_toml(data))
    conf = cfg.load(path)
    ctl = conf.links[0].control
    assert (ctl.switch_port, ctl.detector_period_s, ctl.light_floor_hz, ctl.steer_twist) == \
        (3, 0.25, 5e3, False)
    assert ctl.polarization_period_s == ControlSettings().polarization_period_s   # default

    class Switch:
        def port(self):
            return 3

        def select_port(self, port):
            pass

    class Gp:
        def measure_sop(self):
            pass
    sup = ControlSupervisor.for_node(conf, {"alice-bob": {"switch": Switch(),
                                                          "polarization": Gp()}})
    link = sup.links["alice-bob"]
    assert link.settings is ctl
    assert link.switch.loop.config.port == 3 and link.switch.loop.config.light_floor_hz == 5e3
    assert not link.polarization.loop.config.twists
    assert len(link.polarization.loop.config.references) == 1       # Alice's H only


def test_link_control_on_an_alice_link_is_checked_and_runs_no_loop(tmp_path):
    from daemon.control.supervisor import ControlSupervisor
    data = example_data(tmp_path, keyservice=True)
    data["link"][0]["role"] = "alice"
    path = tmp_path / "alice.toml"
    path.write_text(dump_toml(data))
    conf = cfg.load(path)
    assert ControlSupervisor.for_node(conf, {"alice-bob": {}}).links == {}
    data["link"][0]["control"]["switch_port"] = 99
    path.write_text(dump_toml(data))
    with pytest.raises(cfg.ConfigError, match=r"link\[0\]\.control\.switch_port = 99"):
        cfg.load(path)


def test_several_links_and_defaults(tmp_path):
    data = example_data(tmp_path, keyservice=True)
    second = copy.deepcopy(data["link"][0])
    second["id"] = "bob-carol"
    second["role"] = "alice"
    del second["peer"]["bind"]
    data["link"].append(second)
    del data["node"]["admin_socket"]
    path = tmp_path / "two.toml"
    path.write_text(dump_toml(data))
    conf = cfg.load(path)
    assert [link.id for link in conf.links] == ["alice-bob", "bob-carol"]
    assert conf.links[1].peer.bind is True          # alice listens by default
    assert conf.admin_socket == tmp_path / "state" / "admin.sock"


def _set(data, dotted, value):
    *path, last = dotted.split(".")
    node = data
    for part in path:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

# (change, key the error must name, words of what is accepted)
BAD = [
    ("node.colour", "blue", "node.colour", "unknown key"),
    ("link.0.policy.eps_secc", 1e-10, "link[0].policy.eps_secc", "accepted here"),
    ("link.0.devices.board.url", _DELETE, "link[0].devices.board.url", "URL"),
    ("link.0.devices.board.driver", "qkd-bord", "link[0].devices.board.driver", "qkd-board"),
    ("link.0.devices.board", _DELETE, "link[0].devices.board", "board"),
    ("link.0.keys.secret_key_file", "keys/missing", "link[0].keys.secret_key_file",
     "cannot read"),
    ("link.0.policy.eps_sec", 2.0, "link[0].policy.eps_sec = 2.0", "(0, 1)"),
    ("link.0.policy.eps_cor", "tiny", "link[0].policy.eps_cor = 'tiny'", "a number"),
    ("link.0.policy.block_pulses", 1.5e6 + 0.5, "link[0].policy.block_pulses",
     "an integer in [1e+06, 1e+12]"),
    ("link.0.policy.qber_tol", 0.2, "link[0].policy.qber_tol", "at most qber_threshold"),
    ("link.0.policy.blocks_in_flight", 0, "link[0].policy.blocks_in_flight", "[1, 256]"),
    ("link.0.role", "carol", "link[0].role = 'carol'", "'alice', 'bob'"),
    ("link.0.protocol", "e91", "link[0].protocol", "'bb84-decoy'"),
    ("link.0.peer.endpoint", "127.0.0.1:7301", "link[0].peer.endpoint", "tcp://HOST:PORT"),
    ("link.0.peer.bind", "yes", "link[0].peer.bind", "true or false"),
    ("keystore.capacity_bits", -5, "keystore.capacity_bits", "[1, 1e+15]"),
    ("keystore.key_size_bits", 100, "keystore.key_size_bits", "multiple of 8"),
    ("node.log_level", "loud", "node.log_level", "'debug'"),
    ("node.id", "bob node", "node.id", "letters, digits"),
    ("link.0.protocol", "b92", "link[0].calibration.expected_conclusive_per_pulse", "B92"),
    ("link", _DELETE, "link", "[[link]]"),
    ("link.0.control.switch_prot", 2, "link[0].control.switch_prot", "unknown key"),
    ("link.0.control.switch_port", 0, "link[0].control.switch_port = 0",
     "an integer in [1, 64]"),
    ("link.0.control.switch_port", 2.5, "link[0].control.switch_port = 2.5",
     "an integer in [1, 64]"),
    ("link.0.control.detector_period_s", 0, "link[0].control.detector_period_s = 0",
     "a number in [0.001, 3600]"),
    ("link.0.control.twist_dither_rad", "small", "link[0].control.twist_dither_rad = 'small'",
     "a number in [0.001, 0.5]"),
    ("link.0.control.steer_twist", 1, "link[0].control.steer_twist = 1", "true or false"),
    ("link.0.control.twist_dither_min_rad", 0.1, "link[0].control",
     "twist_dither_min_rad = 0.1 must not exceed twist_dither_rad = 0.08"),
    ("keyservice.colour", "blue", "keyservice.colour", "unknown key"),
    ("keyservice.link", "alice-carol", "keyservice.link = 'alice-carol'", "'alice-bob'"),
    ("keyservice.endpoint", "7200", "keyservice.endpoint = '7200'", "tcp://HOST:PORT"),
    ("keyservice.kme_id", _DELETE, "keyservice.kme_id", "missing"),
    ("keyservice.secret_key_file", "keys/missing", "keyservice.secret_key_file",
     "cannot read"),
    ("keyservice.secret_key_file", "keys/bob.key_secret", "keyservice.secret_key_file",
     "lacks a public-key or secret-key line"),
    ("keyservice.remote_saes", [], "keyservice.remote_saes", "non-empty list"),
    ("keyservice.reserve_ahead", -1, "keyservice.reserve_ahead = -1", "an integer in [0, 65536]"),
    ("keyservice.reply_ttl_s", 0, "keyservice.reply_ttl_s = 0", "a number in (0, 86400]"),
    ("keyservice.max_key_per_request", 2.5, "keyservice.max_key_per_request = 2.5",
     "an integer in [1, 1024]"),
    ("keyservice.clients", _DELETE, "keyservice.clients", "[[keyservice.clients]]"),
    ("keyservice.clients.0.sae", "x", "keyservice.clients[0].sae", "unknown key"),
    ("keyservice.clients.0.sae_id", "a b", "keyservice.clients[0].sae_id", "expected 1-64"),
    ("keyservice.clients.0.public_key_file", "clients/none.key",
     "keyservice.clients[0].public_key_file", "cannot read"),
    ("keyservice.clients.0.public_key_file", _DELETE, "keyservice.clients[0].public_key_file",
     "public_key (40 Z85 characters)"),
    ("keyservice.clients.0.public_key", "tooshort", "keyservice.clients[0].public_key",
     "expected 40 Z85 characters"),
]


@pytest.mark.parametrize("change, value, key, accepted", BAD,
                         ids=[f"{b[0]}={b[1] if b[1] is not _DELETE else 'deleted'}"
                              for b in BAD])
def test_each_bad_config_is_one_line_naming_file_and_key(tmp_path, change, value, key,
                                                         accepted):
    data = example_data(tmp_path, keyservice=True)
    _set(data, change, value)
    path = tmp_path / "bad.toml"
    path.write_text(dump_toml(data))
    with pytest.raises(cfg.ConfigError) as info:
        cfg.load(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: {key}")
    assert accepted in msg


def test_a_secret_key_others_can_read_is_refused(tmp_path):
    path = example_in(tmp_path, keyservice=True)
    os.chmod(tmp_path / "keys" / "bob.key_secret", 0o644)
    with pytest.raises(cfg.ConfigError, match=r"secret_key_file = .*mode 0644.*owner only"):
        cfg.load(path)


def test_a_duplicate_link_id_is_refused(tmp_path):
    data = example_data(tmp_path, keyservice=True)
    data["link"].append(copy.deepcopy(data["link"][0]))
    path = tmp_path / "dup.toml"
    path.write_text(dump_toml(data))
    with pytest.raises(cfg.ConfigError, match=r"link\[1\]\.id = 'alice-bob'"):
        cfg.load(path)


def test_bad_toml_and_missing_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[node\nid = 1\n")
    with pytest.raises(cfg.ConfigError, match="not valid TOML"):
        cfg.load(path)
    with pytest.raises(cfg.ConfigError, match="cannot read"):
        cfg.load(tmp_path / "absent.toml")


def test_run_with_a_bad_config_prints_one_line_and_exits_2(tmp_path, capsys):
    data = example_data(tmp_path, keyservice=True)
    data["link"][0]["policy"]["eps_sec"] = 0
    path = tmp_path / "bad.toml"
    path.write_text(dump_toml(data))
    assert cli.main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "link[0].policy.eps_sec = 0" in err and "(0, 1)" in err
