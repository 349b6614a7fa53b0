"""sd_notify over a datagram socket the test creates; the watchdog fed only while healthy."""

import asyncio
import os
import socket
import time

import pytest

from daemon.control.adapters import DetectorAdapter, all_healthy
from daemon.control.supervisor import ControlSettings, LinkSupervisor
from daemon.runtime import notify
from daemon.runtime.notify import (Notifier, NotifyError, Watchdog, notify_address,
                                   watchdog_interval_s)
from drivers.errors import DeviceTimeout


@pytest.fixture(params=["path", "abstract"])
def listener(request, tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        s.bind(path)
        env = {"NOTIFY_SOCKET": path}
    else:
        name = f"qkd-node-test-{os.getpid()}-{time.monotonic_ns()}"
        s.bind(b"\0" + name.encode())
        env = {"NOTIFY_SOCKET": "@" + name}
    s.settimeout(1.0)
    yield s, env
    s.close()


def received(sock) -> list[str]:
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return out


def test_ready_status_watchdog_stopping_in_order(listener):
    sock, env = listener
    n = Notifier(env)
    assert n.enabled
    assert n.ready("distilling on 1 link")
    assert n.status("QBER 3.3 %")
    assert n.watchdog()
    assert n.stopping()
    msgs = received(sock)
    assert msgs == ["READY=1\nSTATUS=distilling on 1 link\n", "STATUS=QBER 3.3 %\n",
                    "WATCHDOG=1\n", "STOPPING=1\n"]


def test_outside_systemd_everything_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.watchdog()


def test_a_value_with_a_newline_is_refused(listener):
    with pytest.raises(NotifyError, match="one line"):
        Notifier(listener[1]).status("two\nlines")


def test_notify_socket_and_watchdog_usec_parsing():
    assert notify_address({"NOTIFY_SOCKET": "@abc"}) == b"\0abc"
    assert notify_address({"NOTIFY_SOCKET": "/run/x"}) == "/run/x"
    with pytest.raises(NotifyError, match="NOTIFY_SOCKET"):
        notify_address({"NOTIFY_SOCKET": "relative"})
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "2"}, pid=2) == 0.001
    with pytest.raises(NotifyError, match="WATCHDOG_USEC"):
        watchdog_interval_s({"WATCHDOG_USEC": "soon"})


class FakeDetector:
    """A detector driver whose unit can be unplugged."""

    def __init__(self):
        self.lost = False

    def read_telemetry(self):
        from drivers.detector.telemetry import Telemetry
        if self.lost:
            raise DeviceTimeout("det", "COUNTERS:DETECTION_COUNT?", "no reply")
        return Telemetry(time.time(), (0,) * 4, (1e5,) * 4, 50.0, (50.0,) * 4, (0.01,) * 4,
                         (-50.0,) * 4)


def test_pings_stop_when_a_device_is_lost_or_a_loop_stalls(listener):
    sock, env = listener
    now = {"t": 0.0}
    det = FakeDetector()
    adapter = DetectorAdapter("det", det, stale_after_s=5.0, clock=lambda: now["t"])
    n = Notifier({**env, "WATCHDOG_USEC": "2000000"})
    dog = Watchdog(n, lambda: all_healthy([adapter]))
    assert dog.interval_s == 1.0                      # half the timeout
    assert not dog.tick()                             # no tick yet: not alive
    adapter.tick()
    assert dog.tick()
    det.lost = True                                   # the unit stops answering
    adapter.tick()
    assert not dog.tick()
    det.lost = False
    adapter.tick()
    assert dog.tick()
    now["t"] += 6.0                                   # the loop stops ticking: stalled
    assert not dog.tick()
    assert received(sock) == ["WATCHDOG=1\n", "WATCHDOG=1\n"]
    assert (dog.pings, dog.missed) == (2, 3)


def test_a_stalled_event_loop_sends_no_pings(listener):
    """The watchdog runs on the event loop: while a coroutine blocks it, nothing is sent."""
    sock, env = listener
    dog = Watchdog(Notifier(env), lambda: True, interval_s=0.02)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(dog.run(stop))
        await asyncio.sleep(0.1)
        before = len(received(sock))
        time.sleep(0.3)                               # the event loop stalls
        during = len(received(sock))
        await asyncio.sleep(0.1)
        stop.set()
        await task
        return before, during, len(received(sock))

    before, during, after = asyncio.run(main())
    assert before >= 2
    assert during == 0                                # nothing while it was stuck
    assert after >= 2


def _serve_env(env, watchdog_s: float) -> dict:
    return {**env, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}


def test_serve_sends_ready_then_status_then_watchdog_then_stopping(listener):
    sock, env = listener
    text = {"v": "starting"}

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(notify.serve(stop, lambda: True, lambda: text["v"],
                                                notifier=Notifier(_serve_env(env, 0.1))))
        await asyncio.sleep(0.02)
        text["v"] = "1 link(s), 3 keys stored, 0 alarm(s)"
        await asyncio.sleep(0.12)
        stop.set()
        return await task
    dog = asyncio.run(main())
    msgs = received(sock)
    assert msgs[0] == "READY=1\nSTATUS=starting\n"
    assert msgs[1] == "WATCHDOG=1\n"                  # first ping with the READY round
    status_at = msgs.index("STATUS=1 link(s), 3 keys stored, 0 alarm(s)\n")
    assert "WATCHDOG=1\n" in msgs[status_at + 1:]     # pings go on after the status change
    assert msgs[-1] == "STOPPING=1\nSTATUS=stopping\n"
    assert dog.pings >= 2 and dog.missed == 0


def test_serve_pings_only_while_the_supervisor_is_healthy(listener):
    """A real LinkSupervisor ticking a detector every 20 ms: pings while it answers, none once
    the unit is lost, and none while the event loop is stalled."""
    sock, env = listener
    det = FakeDetector()
    sup = LinkSupervisor("l", detector=DetectorAdapter("l.detector", det, stale_after_s=0.1),
                         settings=ControlSettings(detector_period_s=0.02))

    async def main():
        stop = asyncio.Event()
        ctl = asyncio.create_task(sup.run())
        serving = asyncio.create_task(notify.serve(
            stop, sup.healthy, lambda: "ok", notifier=Notifier(_serve_env(env, 0.04))))
        await asyncio.sleep(0.2)
        healthy_pings = received(sock).count("WATCHDOG=1\n")
        det.lost = True
        await asyncio.sleep(0.1)                      # the loss shows at the next tick
        received(sock)
        await asyncio.sleep(0.2)
        lost_pings = received(sock).count("WATCHDOG=1\n")
        lost_status = sup.status()
        det.lost = False
        await asyncio.sleep(0.2)
        received(sock)
        await asyncio.sleep(0.1)
        back_pings = received(sock).count("WATCHDOG=1\n")
        time.sleep(0.3)                               # the event loop stalls
        during_stall = received(sock).count("WATCHDOG=1\n")
        stale = not sup.healthy()                     # no tick for 0.3 s > stale_after_s
        stop.set()
        await serving
        ctl.cancel()
        await asyncio.gather(ctl, return_exceptions=True)
        sup.close()
        return healthy_pings, lost_pings, lost_status, back_pings, during_stall, stale
    healthy_pings, lost_pings, lost_status, back_pings, during_stall, stale = \
        asyncio.run(main())
    assert healthy_pings >= 3                         # 0.2 s at 20 ms: ~10 expected
    assert lost_pings == 0
    assert "device_lost" in lost_status["loops"]["l.detector"]["alarms"]
    assert back_pings >= 1
    assert during_stall == 0 and stale


def test_node_health_includes_the_control_loops(tmp_path):
    from daemon import config as cfg
    from daemon.runtime.node import Node
    from daemon.runtime.wiring import Ports
    from tests.daemon.configs import example_in

    class Control:
        ok = True

        def healthy(self):
            return self.ok

        def annotate(self, links):
            return links

    node = Node(cfg.load(example_in(tmp_path)), Ports(None, None, None), log=None)
    node.control = Control()
    assert node.healthy()
    node.control.ok = False
    assert not node.healthy()
