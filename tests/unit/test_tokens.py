"""Random tokens from a block of os.urandom: each byte handed out once, a new block read
when one runs out, and a forked child never repeating its parent's tokens."""

from __future__ import annotations

import os

from sipbridge.sip.tokens import TokenPool, token_hex


def test_tokens_take_consecutive_bytes_and_read_a_new_block_when_one_is_used_up() -> None:
    reads: list[int] = []
    blocks = iter([bytes(range(16)), bytes(range(100, 116))])

    def source(n: int) -> bytes:
        reads.append(n)
        return next(blocks)

    pool = TokenPool(block=16, source=source)
    assert pool.take(6) == bytes(range(6))
    assert pool.take(6) == bytes(range(6, 12))
    assert reads == [16]
    # 4 bytes are left in the block: a token of 6 takes a new one, and none is reused
    assert pool.take(6) == bytes(range(100, 106))
    assert reads == [16, 16]


def test_a_token_longer_than_the_block_reads_what_it_needs() -> None:
    pool = TokenPool(block=8, source=lambda n: bytes(n))
    assert len(pool.take(20)) == 20


def test_token_hex_is_hex_of_the_length_asked_and_does_not_repeat() -> None:
    tokens = [token_hex(8) for _ in range(5000)]
    assert all(len(t) == 16 and int(t, 16) >= 0 for t in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_forked_child_reads_its_own_bytes() -> None:
    token_hex(8)  # the parent has a block in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next tokens, to the parent
        try:
            os.write(write, "".join(token_hex(8) for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = "".join(token_hex(8) for _ in range(4))
    assert len(child) == 64 and child != parent


def test_call_ids_sort_in_the_order_calls_came_and_stay_unguessable() -> None:
    """rtc_ and 32 hex digits: the creation time's milliseconds first, so that the
    store's index of calls grows at its end, then 80 random bits."""
    import re

    from sipbridge.calls.call import new_call_id

    start = 1_765_000_000.0
    ids = [new_call_id(start + i * 0.001) for i in range(200)]
    assert all(re.fullmatch(r"rtc_[0-9a-f]{32}", i) for i in ids)
    assert ids == sorted(ids)
    assert ids[0][4:16] == f"{int(start * 1000):012x}"
    same = {new_call_id(start) for _ in range(1000)}  # one millisecond: random apart
    assert len(same) == 1000
    assert len({i[16:] for i in same}) == 1000


def test_a_cluster_node_s_call_ids_name_it() -> None:
    from sipbridge.calls.call import call_node, new_call_id

    start = 1_765_000_000.0
    ids = [new_call_id(start + i * 0.001, node="node-2") for i in range(50)]
    assert ids == sorted(ids) and all(i.endswith("_node-2") for i in ids)
    assert {call_node(i) for i in ids} == {"node-2"}
    assert call_node(new_call_id(node="a")) == "a"
    assert call_node(new_call_id()) is None  # outside a cluster: no node
    for not_ours in ("", "rtc_", "rtc_123_a", "sess_" + "0" * 32 + "_a", "rtc_" + "0" * 32 + "_"):
        assert call_node(not_ours) is None, not_ours
