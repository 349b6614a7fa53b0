"""The declarative SCPI base, byte-exact against a scripted device."""

from __future__ import annotations

import pytest

from drivers.errors import (DeviceProtocolError, DeviceReportedError, DeviceTimeout,
                            SettingOutOfRange)
from drivers.scpi import (Identity, ScpiInstrument, ScpiProperty, format_floats,
                          parse_error_reply, parse_floats)
from tests.drivers.expected import expected_protocol


class Attenuator(ScpiInstrument):
    attenuation_db = ScpiProperty(":ATT?", ":ATT {}", valid_range=(0.0, 60.0), units="dB",
                                  format=lambda v: f"{v:.2f}")
    wavelength_nm = ScpiProperty(":WAV?", ":WAV {}", parse=int, valid_values={1310, 1550},
                                 units="nm")
    vector = ScpiProperty(":VEC?", ":VEC {}", parse=parse_floats(3), format=format_floats(3),
                          validate=lambda v: None if len(v) == 3 else (_ for _ in ()).throw(
                              ValueError("needs 3 components")))
    power_dbm = ScpiProperty(":POW?", units="dBm")
    shutter = ScpiProperty(set=":SHUT {}", valid_values={0, 1})


def test_get_and_set_are_byte_exact():
    with expected_protocol(Attenuator, [(b":ATT?\n", b"12.5\n"), (b":ATT 3.25\n", None),
                                        (b":WAV?\n", b"1550\n"), (b":WAV 1310\n", None)]) as dev:
        assert dev.attenuation_db == 12.5
        dev.attenuation_db = 3.25
        assert dev.wavelength_nm == 1550
        dev.wavelength_nm = 1310


def test_vector_property_round_trip():
    with expected_protocol(Attenuator, [(b":VEC 0.100,-0.200,0.300\n", None),
                                        (b":VEC?\n", b"0.1,-0.2,0.3\n")]) as dev:
        dev.vector = (0.1, -0.2, 0.3)
        assert dev.vector == pytest.approx((0.1, -0.2, 0.3))


@pytest.mark.parametrize("attr,value,pattern", [
    ("attenuation_db", 60.5, r"attenuation_db=60.5 outside \[0.0, 60.0\] dB"),
    ("attenuation_db", -1, r"outside \[0.0, 60.0\] dB"),
    ("attenuation_db", "3", r"not a number in \[0.0, 60.0\]"),
    ("wavelength_nm", 1400, r"wavelength_nm=1400 not one of \[1310, 1550\] nm"),
    ("vector", (1.0, 2.0), r"needs 3 components"),
])
def test_out_of_range_is_refused_before_sending(attr, value, pattern):
    with expected_protocol(Attenuator, []) as dev:       # nothing may be sent
        with pytest.raises(SettingOutOfRange, match=pattern):
            setattr(dev, attr, value)
    assert dev.last_settings == {}


def test_read_only_and_write_only():
    with expected_protocol(Attenuator, [(b":POW?\n", b"-3.5\n")]) as dev:
        assert dev.power_dbm == -3.5
        with pytest.raises(AttributeError, match="read-only"):
            dev.power_dbm = 1.0
        with pytest.raises(AttributeError, match="write-only"):
            dev.shutter  # noqa: B018


def test_unparsable_reply_is_a_protocol_error_not_a_value():
    with expected_protocol(Attenuator, [(b":ATT?\n", b"12.5dB?\n"), (b":VEC?\n", b"1,2\n")]) \
            as dev:
        with pytest.raises(DeviceProtocolError, match=r":ATT\?.*'12.5dB\?'"):
            dev.attenuation_db  # noqa: B018
        with pytest.raises(DeviceProtocolError, match="expected 3"):
            dev.vector  # noqa: B018


def test_missing_reply_is_a_timeout_naming_the_command():
    with expected_protocol(Attenuator, [(b":ATT?\n", None)]) as dev:
        with pytest.raises(DeviceTimeout, match=r"command ':ATT\?'"):
            dev.attenuation_db  # noqa: B018


def test_settings_are_remembered_for_reapply():
    with expected_protocol(Attenuator, [(b":ATT 1.00\n", None), (b":WAV 1310\n", None),
                                        (b":ATT 2.00\n", None),
                                        (b":ATT 2.00\n", None), (b":WAV 1310\n", None)]) as dev:
        dev.attenuation_db = 1.0
        dev.wavelength_nm = 1310
        dev.attenuation_db = 2.0
        assert dev.last_settings == {"attenuation_db": (2.0,), "wavelength_nm": (1310,)}
        dev.reapply_settings()                           # first-made order, latest values


def test_check_errors_drains_the_queue():
    with expected_protocol(Attenuator, [
        (b"SYST:ERR?\n", b'-222,"Data out of range"\n'),
        (b"SYST:ERR?\n", b'-113,"Undefined header"\n'),
        (b"SYST:ERR?\n", b'0,"No error"\n'),
        (b"SYST:ERR?\n", b'+0,"No error"\n'),
    ]) as dev:
        with pytest.raises(DeviceReportedError,
                           match="-222 Data out of range; -113 Undefined header") as info:
            dev.check_errors()
        assert info.value.code == -222
        dev.check_errors()                               # empty queue: no error


def test_identify():
    with expected_protocol(Attenuator, [(b"*IDN?\n", b"GP,PSY-201,12345,1.2.3\n"),
                                        (b"*IDN?\n", b"garbage\n")]) as dev:
        assert dev.identify() == Identity("GP", "PSY-201", "12345", "1.2.3")
        with pytest.raises(DeviceProtocolError, match="4 fields"):
            dev.identify()


@pytest.mark.parametrize("reply,parsed", [('0,"No error"', (0, "No error")),
                                          ("-100", (-100, "")),
                                          ('+12, "Cal due"', (12, "Cal due"))])
def test_parse_error_reply(reply, parsed):
    assert parse_error_reply(reply) == parsed


def test_parse_error_reply_rejects_garbage():
    with pytest.raises(ValueError):
        parse_error_reply("No error")
