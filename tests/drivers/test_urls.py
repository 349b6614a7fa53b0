"""Every malformed device URL, for every transport, is one line naming it and the form accepted
(issue 7, defect 4) — refused before any socket, port or VISA session is opened."""

from __future__ import annotations

import pytest

from drivers.errors import InvalidDeviceUrl
from drivers.transport import check_url, open_transport

MALFORMED = {
    "tcp": ["socket://", "socket://host", "socket://:80", "socket://h:0", "socket://h:99999",
            "socket://h:port", "socket://h:-1", "socket://h o:80", "socket://h:80/x/y"],
    "visa": ["TCPIP::127.0.0.1::99999::SOCKET", "TCPIP::garbage", "TCPIP::h::SOCKET",
             "TCPIP::::5::SOCKET", "TCPIP::h::12ab::SOCKET", "TCPIP::h::0::SOCKET",
             "TCPIP::bad host::80::SOCKET", "TCPIP::h::80::SOCKET@nope", "GPIB::x::INSTR",
             "GPIB::31::INSTR", "ASRL::INSTR", "USB::0x1::INSTR"],
    "serial": ["garbage", "ttyUSB0", "foo://bar", "rfc2217://host", "rfc2217://h:99999",
               "/dev/tty USB0", "", "   "],
}
FORM = {"tcp": "socket://host:port", "visa": "TCPIP[n]::host::port::SOCKET",
        "serial": "a serial device path"}

WELL_FORMED = ["socket://127.0.0.1:7101", "socket://[::1]:7101", "TCPIP::127.0.0.1::7103::SOCKET",
               "TCPIP0::10.0.0.2::inst0::INSTR@py", "TCPIP::h.example::INSTR",
               "ASRL/dev/ttyUSB0::INSTR", "ASRL3::INSTR", "USB0::0x1313::0x8078::P0001::INSTR",
               "GPIB0::12::INSTR", "GPIB0::12::3::INSTR", "TCPIP::h::7110::SOCKET@/x/id120.yaml@sim",
               "/dev/ttyUSB0", "COM3", "loop://", "rfc2217://127.0.0.1:4000",
               "spy://loop://?file=x", "socket://localhost:1"]


@pytest.mark.parametrize("kind, url", [(k, u) for k, urls in MALFORMED.items() for u in urls])
def test_malformed_url_is_one_line_naming_it_and_the_form(kind, url):
    with pytest.raises(InvalidDeviceUrl) as err:
        open_transport(url, timeout_s=0.1)
    message = str(err.value)
    assert repr(url) in message and "\n" not in message
    form = "rfc2217://host:port" if url.startswith("rfc2217") else FORM[kind]
    assert form in message, message
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("url", WELL_FORMED)
def test_well_formed_urls_pass_the_check(url):
    check_url(url)
