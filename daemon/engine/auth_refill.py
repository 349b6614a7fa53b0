"""Moving committed blocks' refills from the key store into the authentication key pool.

A block's refill is stored with its keys (prepare) and numbered by its commit, in the same
SQLite transactions, so a crash never separates a committed block from its refill. The pool
takes refills strictly in number order and records the next number with the bytes, so this
move can be repeated at any time (after every commit step, after a restart): what the pool
holds already is skipped, what comes after a gap (a block the coordinator committed that this
end has not) waits. The store drops a refill's bits only once the pool holds them durably.
"""

from __future__ import annotations


def move_refills(store, channel, link_id: str) -> int:
    """Hand the pool every committed refill it can take next; returns how many it took."""
    nxt = channel.next_auth_refill(link_id)
    taken = 0
    held_already = False
    for index, bits in store.pending_auth_refills(link_id):
        if index > nxt:
            break                   # a gap: the refill before it is not committed here yet
        buf = bytearray(bits)
        try:
            if index == nxt:
                channel.refill_auth_key(link_id, index, buf)
                nxt += 1
                taken += 1
            else:
                held_already = True
        finally:
            buf[:] = bytes(len(buf))
    if taken or held_already:
        store.auth_refills_taken(link_id, nxt)
    return taken
