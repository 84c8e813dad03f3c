"""Issue 4's benchmark: thousands of `processed` listeners on one API process.

    python -m bench.listeners                  # 500 users x 10 listeners, 1,000 events/s, 20 s
    python -m bench.listeners --write          # ... and append the section to bench/RESULTS.md
    python -m bench.listeners --users 50 --seconds 5 --no-baseline --no-profile   # a quick try

One `python -m graph` (uvicorn, one process, in-memory MongoDB) on a Redis of
our own (or REDIS_URL, under a unique QUEUE_PREFIX; nothing is flushed). Users
are registered over HTTP (argon2: ~0.2 s of CPU each, so a few hundred users,
each with several listeners); their tokens are minted with the API's
JWT_SECRET, as `login` would issue them. Load generators (separate processes,
graphql-transport-ws, no compression) open the listeners with `websockets`,
each subscribed to `processed { cursor job { id status finishedAt } }`, then
read them with a minimal frame parser (`loadgen.Frames`).

Events: jobs are enqueued through the engine before the API starts, then a
producer in this process finishes them at a steady rate the way a worker does
(each job's `finish` claims the next job in the same call, as a worker's does;
the jobs due each 2 ms go in one pipeline, open loop); the engine's fair
rotation spreads the finishes evenly over the users. Latency = the client's
receive time - the job's `finishedAt` (Redis `TIME` at the finish, ms
resolution, same machine clock); the first WARMUP seconds are left out.

The in-memory MongoDB (mongomock) scans every stored document per upsert
(see scenario 6 in RESULTS.md), so at 1,000 finishes/s the archiver would
measure mongomock, not the event path: the producer empties the shard's
archive list after each batch of finishes (the archiver still wakes after events and
reads the list). `--archive` leaves it in place.

Baseline (same run, same clients, same load): a plain strawberry subscription
fed from an in-memory asyncio broadcast (bench/broadcast_app.py), where
`finishedAt` is the moment of publishing (no Redis hop).

With `--profile` (default on) py-spy samples the API for a few more seconds
of the same load after the measured window; the summary goes to
bench/.work/listeners-profile.txt.

Modules, in the order a run uses them: `__main__` (the command line),
`options`, `ours` (the run against `python -m graph`) and `baseline` (the same
load against bench/broadcast_app.py), which use `loadgen` (the load-generator
processes), `producer` (the finishes), `probes` (RSS, CPU, Redis connections,
subscriptions), `latency` and `pyspy`; `results` holds what a run measured and
`report` writes it as Markdown.
"""
