"""``sipbridge serve`` under tracemalloc, for bench/soak.py's ``--tracemalloc`` runs.

    python bench/soak_gateway.py SNAPSHOT_DIR FRAMES --config sipbridge.toml

Runs the gateway exactly as ``python -m sipbridge serve`` does, with tracemalloc
keeping FRAMES frames of each allocation's traceback. Each SIGUSR2 writes
``SNAPSHOT_DIR/snap-N.pickle``
(a tracemalloc snapshot) and ``SNAPSHOT_DIR/snap-N.json`` (live objects counted by
type after a full collection), N counting from 1, so the soak can compare two
moments of one process.
"""

from __future__ import annotations

import collections
import gc
import json
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType


def main() -> int:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    taken = 0

    def dump(signum: int, frame: FrameType | None) -> None:
        nonlocal taken
        taken += 1
        gc.collect()
        types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        snapshot.dump(str(out / f"snap-{taken}.pickle"))
        current, peak = tracemalloc.get_traced_memory()
        (out / f"snap-{taken}.json").write_text(json.dumps({
            "traced": current, "peak": peak, "objects": sum(types.values()),
            "types": dict(types.most_common(200)),
        }))

    tracemalloc.start(int(sys.argv[2]))
    signal.signal(signal.SIGUSR2, dump)
    from sipbridge.cli import main as cli_main

    return cli_main(["serve", *sys.argv[3:]])


if __name__ == "__main__":
    sys.exit(main())
