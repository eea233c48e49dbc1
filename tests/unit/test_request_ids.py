"""Generated request ids: uuid4-shaped, distinct, and not repeated by a forked child.

They come from a generator seeded once (api/errors.py says why), so a forked
process must reseed it: otherwise parent and child hand out the same ids.
"""

from __future__ import annotations

import os
import uuid

from bulkport.api.errors import new_request_id


def test_ids_are_distinct_uuid4_hex() -> None:
    ids = [new_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    for rid in ids[:100]:
        assert uuid.UUID(hex=rid).version == 4 and uuid.UUID(hex=rid).hex == rid


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next ids, then leave without running pytest's exit
        try:
            os.write(write, "".join(new_request_id() for _ in range(3)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1024).decode()
    os.close(read)
    parent = "".join(new_request_id() for _ in range(3))
    assert len(child) == len(parent) == 96
    assert child != parent
