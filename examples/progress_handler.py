"""A handler that reports its progress: what `jobUpdates` subscribers see move.

    QUEUE_HANDLER=examples.progress_handler:count_words python -m workers

A handler that declares a second parameter gets the job context (CONTRACT §8):
`job.id`, `job.attempt` (1 for the first), and `job.progress(value, message)`,
which records a value from 0 to 1 on the job and sends it as a PROGRESS
update. In a plain function like this one it returns once recorded; in an
`async def` handler it is awaited. Reports closer than 100 ms apart are
merged (the last one always arrives), so calling it often is fine.
"""

from __future__ import annotations

import os
import time

STEP_SECONDS = float(os.environ.get("EXAMPLE_STEP_SECONDS", "0.2"))


def count_words(request_data: str, job) -> str:
    words = request_data.split() or [""]
    for i, _word in enumerate(words, 1):
        time.sleep(STEP_SECONDS)  # the real work would go here
        job.progress(i / len(words), f"word {i} of {len(words)}")
    return f"{len(words)} words"
