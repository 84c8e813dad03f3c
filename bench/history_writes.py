"""The in-memory store's write cost per archived record, without Redis or a worker.

    python -m bench.history_writes [--jobs 100000]

Upserts --jobs new records through `save_job_snapshots` in batches of 200 (the
archiver's batch), then the same jobs again at a newer version (their finish),
with MongoDB in memory (MONGO_URI unset), and prints microseconds a record
for each.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime, timezone

BATCH = 200


async def measure(jobs: int) -> dict:
    from bson import ObjectId

    from engine.jobs import JobRecord, JobStatus
    from graph.store import open_store, save_job_snapshots

    client = await open_store(None, "history_writes")
    now = datetime.now(timezone.utc)
    ids = [str(ObjectId()) for _ in range(jobs)]

    def records(lo: int, hi: int, status: JobStatus, version: int) -> list:
        return [JobRecord(id=ids[i], user_id=f"u{i % 100}", request_data="x", status=status,
                          attempts=1, processed_data="x", created_at=now, started_at=now,
                          finished_at=now, version=version) for i in range(lo, hi)]

    out = {}
    for name, status, version in (("insert", JobStatus.QUEUED, 1),
                                  ("update", JobStatus.COMPLETED, 3)):
        t = time.perf_counter()
        for lo in range(0, jobs, BATCH):
            await save_job_snapshots(records(lo, min(lo + BATCH, jobs), status, version))
        out[f"{name}_us_per_record"] = (time.perf_counter() - t) / jobs * 1e6
    client.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.history_writes",
                                description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=100_000)
    args = p.parse_args(argv)
    result = asyncio.run(measure(args.jobs))
    print(", ".join(f"{k} {v:.1f}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
