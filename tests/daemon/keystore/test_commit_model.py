"""Model check of the two-step commit: every interleaving of one block's protocol with crashes
(all volatile state lost, at every step, at either end), lost, duplicated and reordered
messages and timer firings, within fault budgets. At every reachable state the safety
invariants hold; from every reachable state a fault-free continuation settles both ends on the
same outcome (liveness after the faults stop).

The durable half is ``MemoryStore`` (same block semantics as ``KeyStore``; the last test
replays random runs against two real store files to keep the two honest).
"""

from __future__ import annotations

import copy
import random
import uuid

import numpy as np
import pytest

from daemon.keystore import commit as commit_mod
from daemon.keystore import messages as m
from daemon.keystore.commit import LinkCommit
from daemon.keystore.store import KeyStore
from tests.daemon.keystore.memory_store import MemoryStore

LINK = "L"
BLOCK = 5
KEY_BITS = 8
BLOCK_BITS = np.array([1, 0, 1, 1, 0, 0, 1, 0] * 3 + [1, 1, 0], dtype=np.uint8)   # 3 keys + 3 spare
N_KEYS = len(BLOCK_BITS) // KEY_BITS


@pytest.fixture(autouse=True)
def deterministic_ids(monkeypatch):
    """Same key IDs on every path, so equal states are recognised as equal."""
    def ids(n):
        return [uuid.UUID(int=(7 << 64) + i, version=4) for i in range(n)]
    monkeypatch.setattr(commit_mod, "new_key_ids", ids)


def new_end(store, coordinator):
    return LinkCommit(store, LINK, coordinator=coordinator, key_size_bits=KEY_BITS,
                      max_retries=2, max_wait_ticks=2)


def clone_end(e: LinkCommit, store) -> LinkCommit:
    c = copy.copy(e)
    c.store = store
    c._undecided = {b: list(v) for b, v in e._undecided.items()}
    c._unacked = {b: list(v) for b, v in e._unacked.items()}
    c._expected, c._held = dict(e._expected), dict(e._held)
    c._pending = {b: [v[0].copy(), v[1], None if v[2] is None else bytearray(v[2])]
                  for b, v in e._pending.items()}
    c._aborted = e._aborted.copy()
    c.counters = e.counters.copy()
    return c


class World:
    """Both ends, the network (a multiset: delivery in any order) and the fault budgets."""

    def __init__(self, budgets):
        self.store = {"A": MemoryStore(), "B": MemoryStore()}
        self.end = {"A": new_end(self.store["A"], True), "B": new_end(self.store["B"], False)}
        self.end["B"].expect(BLOCK)
        self.role = {"A": "running", "B": "running"}    # the block roles: running|done|lost
        self.net: list[tuple[str, int, bytes]] = []       # (destination, msg_type, payload)
        self.budget = dict(budgets)

    def clone(self) -> "World":
        """A copy sharing nothing mutable (deepcopy was most of the run time)."""
        w = copy.copy(self)
        w.store = {x: s.clone() for x, s in self.store.items()}
        w.end = {x: clone_end(e, w.store[x]) for x, e in self.end.items()}
        w.role, w.net, w.budget = dict(self.role), list(self.net), dict(self.budget)
        return w

    def key(self):
        def volatile(e: LinkCommit):
            return (tuple(sorted((b, v[1]) for b, v in e._undecided.items())),
                    tuple(sorted((b, v[0][0], v[1]) for b, v in e._unacked.items())),
                    tuple(sorted(e._expected.items())), tuple(sorted(e._held)),
                    tuple(sorted((b, v[1]) for b, v in e._pending.items())),
                    tuple(e._aborted))
        return (self.store["A"].snapshot(), self.store["B"].snapshot(),
                volatile(self.end["A"]), volatile(self.end["B"]),
                tuple(sorted(self.role.items())), tuple(sorted(self.net)),
                tuple(sorted(self.budget.items())))

    def send(self, src, msgs):
        dst = "B" if src == "A" else "A"
        self.net.extend((dst, t, p) for t, p in msgs)

    # ---- events: each returns the outgoing messages of the end that acted
    def finish(self, who):
        self.role[who] = "done"
        return self.end[who].block_done(BLOCK, BLOCK_BITS.copy())

    def abort_role(self, who):
        self.role[who] = "lost"
        return self.end[who].block_aborted(BLOCK)

    def deliver(self, i, keep=False):
        dst, t, p = self.net[i] if keep else self.net.pop(i)
        return dst, self.end[dst].receive(t, p)

    def crash(self, who):
        self.end[who] = new_end(self.store[who], who == "A")
        if self.role[who] == "running":
            self.role[who] = "lost"
        return self.end[who].recover()


def successors(w: World):
    """Every (label, world) one event away."""
    out = []

    def branch(label, act, who_sends=None, crash_after=False):
        nw = w.clone()
        res = act(nw)
        src, msgs = res if isinstance(res, tuple) else (who_sends, res)
        if crash_after:                          # the end dies before its replies leave
            nw.budget["crash_" + src] -= 1
            nw.send(src, nw.crash(src))
        else:
            nw.send(src, msgs)
        out.append((label, nw))

    for who in "AB":
        if w.role[who] == "running":
            branch(f"{who} finishes", lambda nw, who=who: nw.finish(who), who)
            if w.budget["crash_" + who]:
                branch(f"{who} finishes, crashes", lambda nw, who=who: nw.finish(who), who, True)
        if who == "B" and w.role[who] == "running" and w.budget["role_abort"]:
            def ab(nw):
                nw.budget["role_abort"] -= 1
                return nw.abort_role("B")
            branch("B role aborts", ab, "B")
        if w.budget["crash_" + who]:
            def cr(nw, who=who):
                nw.budget["crash_" + who] -= 1
                return nw.crash(who)
            branch(f"{who} crashes", cr, who)
        if w.budget["timer_" + who]:
            def tm(nw, who=who):
                nw.budget["timer_" + who] -= 1
                return nw.end[who].on_timer()
            branch(f"{who} timer", tm, who)
    seen = set()
    for i, msg in enumerate(w.net):
        if msg in seen:                          # identical copies: one branch is enough
            continue
        seen.add(msg)
        name = m.CommitMsgType(msg[1]).name
        branch(f"deliver {name} to {msg[0]}", lambda nw, i=i: nw.deliver(i))
        if w.budget["crash_" + msg[0]]:
            branch(f"deliver {name} to {msg[0]}, it crashes", lambda nw, i=i: nw.deliver(i),
                   crash_after=True)
        if w.budget["dup"]:
            def dup(nw, i=i):
                nw.budget["dup"] -= 1
                return nw.deliver(i, keep=True)
            branch(f"duplicate {name} to {msg[0]}", dup)
        if w.budget["drop"]:
            def drop(nw, i=i):
                nw.budget["drop"] -= 1
                nw.net.pop(i)
                return "A", []
            branch(f"drop {name} to {msg[0]}", drop)
    return out


def check_safety(w: World, trace):
    a = w.store["A"].blocks.get((LINK, BLOCK))
    b = w.store["B"].blocks.get((LINK, BLOCK))
    sa, sb = (a[1] if a else None), (b[1] if b else None)
    assert not (sb == "committed" and sa != "committed"), trace
    if sa == "committed":
        assert sb in ("prepared", "committed"), trace      # B voted yes and can only commit now
    if a and b and a[4] and b[4]:
        assert a[4] == b[4], trace                         # same IDs, same bits
    if b and b[4]:
        assert a is not None, trace                        # B never holds keys A never stored


def heal(w: World, trace):
    """No more faults: finish running roles, deliver everything in order, fire timers."""
    w = w.clone()
    for who in "AB":
        if w.role[who] == "running":
            w.send(who, w.finish(who))
    for _ in range(60):
        while w.net:
            dst, out = w.deliver(0)
            w.send(dst, out)
            check_safety(w, trace + ["heal"])
        settled = all(w.store[x].in_doubt(LINK) == [] for x in "AB")
        idle = not w.end["A"]._undecided and not w.end["A"]._unacked \
            and not w.end["B"]._pending and not w.end["B"]._held
        if settled and idle:
            break
        for who in "AB":
            w.send(who, w.end[who].on_timer())
    else:
        raise AssertionError(f"did not settle: {trace}")
    sa = w.store["A"].block_state(LINK, BLOCK)
    sb = w.store["B"].block_state(LINK, BLOCK)
    assert (sa == "committed") == (sb == "committed"), (sa, sb, trace)
    return sa == "committed"


def explore(budgets, limit=2_000_000):
    start = World(budgets)
    stack = [(start, [])]
    seen = {start.key()}
    outcomes = set()
    while stack:
        w, trace = stack.pop()
        check_safety(w, trace)
        outcomes.add(heal(w, trace))
        for label, nw in successors(w):
            k = nw.key()
            if k not in seen:
                seen.add(k)
                stack.append((nw, trace + [label]))
        assert len(seen) < limit
    return len(seen), outcomes


def test_no_faults_commits():
    n, outcomes = explore(dict(crash_A=0, crash_B=0, dup=0, drop=0, timer_A=0, timer_B=0,
                               role_abort=0))
    assert outcomes == {True}          # with nothing going wrong every interleaving commits
    assert n > 5


@pytest.mark.parametrize("budgets", [
    dict(crash_A=1, crash_B=1, dup=0, drop=1, timer_A=1, timer_B=1, role_abort=0),
    pytest.param(dict(crash_A=1, crash_B=1, dup=1, drop=1, timer_A=1, timer_B=1, role_abort=0),
                 marks=pytest.mark.slow),
    pytest.param(dict(crash_A=2, crash_B=0, dup=0, drop=1, timer_A=2, timer_B=1, role_abort=0),
                 marks=pytest.mark.slow),
    pytest.param(dict(crash_A=0, crash_B=2, dup=1, drop=0, timer_A=1, timer_B=2, role_abort=1),
                 marks=pytest.mark.slow),
], ids=["crash-each-end-drop", "one-of-each", "coordinator-crashes-twice",
        "participant-crashes-twice"])
def test_every_interleaving_agrees(budgets):
    """Checked by mutation when written: voting before the durable prepare, committing on
    recovery, ignoring ABORT, or a participant giving up after its vote each fail here."""
    n, outcomes = explore(budgets)
    assert outcomes == {True, False}   # faults can cost the block, and some paths still keep it
    assert n > 1000


def test_model_store_matches_keystore(tmp_path):
    """Random runs with faults against two real store files: the same safety and agreement."""
    rnd = random.Random(1234)
    for run in range(12):
        w = World(dict(crash_A=2, crash_B=2, dup=2, drop=2, timer_A=3, timer_B=3, role_abort=0))
        for who in "AB":
            path = tmp_path / f"{who}{run}.db"
            w.store[who] = KeyStore(path)
            w.end[who] = new_end(w.store[who], who == "A")
        w.end["B"].expect(BLOCK)
        trace = []
        for _ in range(rnd.randrange(0, 12)):
            options = successors_real(w)
            if not options:
                break
            label, act = rnd.choice(options)
            trace.append(label)
            act()
            check_real(w, trace)
        # heal
        for who in "AB":
            if w.role[who] == "running":
                w.send(who, w.finish(who))
        for _ in range(40):
            while w.net:
                dst, out = w.deliver(0)
                w.send(dst, out)
            for who in "AB":
                w.send(who, w.end[who].on_timer())
        sa = w.store["A"].block_state(LINK, BLOCK)
        sb = w.store["B"].block_state(LINK, BLOCK)
        assert (sa == "committed") == (sb == "committed"), trace
        if sa == "committed":
            ids = w.store["A"].block_key_ids(LINK, BLOCK)
            assert ids == w.store["B"].block_key_ids(LINK, BLOCK)
            assert w.store["A"].keys_digest(ids) == w.store["B"].keys_digest(ids)
        for who in "AB":
            assert w.store[who].integrity_check() == "ok"
            w.store[who].close()


def successors_real(w):
    """Random-walk events on a world with real stores (crash = new LinkCommit on the same
    open store, which is what a restart sees: only durable state survives)."""
    opts = []
    for who in "AB":
        if w.role[who] == "running":
            opts.append((f"{who} finishes", lambda who=who: w.send(who, w.finish(who))))
        if w.budget["crash_" + who]:
            def cr(who=who):
                w.budget["crash_" + who] -= 1
                w.send(who, w.crash(who))
            opts.append((f"{who} crashes", cr))
        opts.append((f"{who} timer", lambda who=who: w.send(who, w.end[who].on_timer())))
    for i in range(len(w.net)):
        opts.append(("deliver", lambda i=i: w.send(*w.deliver(i))))
        if w.budget["drop"]:
            def drop(i=i):
                w.budget["drop"] -= 1
                w.net.pop(i)
            opts.append(("drop", drop))
        if w.budget["dup"]:
            def dup(i=i):
                w.budget["dup"] -= 1
                w.send(*w.deliver(i, keep=True))
            opts.append(("dup", dup))
    return opts


def check_real(w, trace):
    sa = w.store["A"].block_state(LINK, BLOCK)
    sb = w.store["B"].block_state(LINK, BLOCK)
    assert not (sb == "committed" and sa != "committed"), trace
    if sa == "committed":
        assert sb in ("prepared", "committed"), trace
