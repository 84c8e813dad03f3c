"""A Python client of the userqueue API with `gql`: log in, enqueue, listen.

    pip install 'gql[httpx,websockets]'
    python examples/python_client.py --username alice hello world
    # password: USERQUEUE_PASSWORD, or asked on the terminal

It registers the user if needed, logs in, enqueues its arguments as one
`enqueueMany` batch, and prints a `processed` event for each of them as the
workers finish them (start the API with `python -m graph --dev` to have one).

The subscription passes `after: "0"` ("from the oldest event kept"), so jobs
that finish before the subscription is set up are replayed rather than
missed; events of older jobs are skipped by id. A long-running listener keeps
the last `cursor` it printed and resumes with `after: <cursor>`.

With --follow it instead follows the first job as it runs, with `jobUpdates`:
its current state first, then STARTED, a progress bar per PROGRESS update
(from a handler that reports, e.g. examples/progress_handler.py), and the
final state, after which the subscription completes by itself.

    QUEUE_HANDLER=examples.progress_handler:count_words python -m graph --dev
    python examples/python_client.py --follow "one two three four five"
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from gql import Client, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

REGISTER = gql("mutation($u: String!, $p: String!) { register(username: $u, password: $p) { id } }")
LOGIN = gql("mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }")
ENQUEUE_MANY = gql("""
    mutation($items: [EnqueueInput!]!) { enqueueMany(items: $items) { id requestData status } }
""")
PROCESSED = gql("""
    subscription($after: String) {
      processed(after: $after) { cursor job { id status requestData processedData error } }
    }
""")


JOB_UPDATES = gql("""
    subscription($id: ID!, $after: String) {
      jobUpdates(id: $id, after: $after) {
        cursor kind job { id status attempts progress progressMessage processedData error }
      }
    }
""")


def error_code(exc: TransportQueryError) -> str | None:
    errors = exc.errors or []
    return (errors[0].get("extensions") or {}).get("code") if errors else None


async def log_in(url: str, username: str, password: str) -> str:
    async with Client(transport=HTTPXAsyncTransport(url=url)) as session:
        try:
            await session.execute(REGISTER, variable_values={"u": username, "p": password})
            print(f"registered {username}")
        except TransportQueryError as exc:
            if error_code(exc) != "CONFLICT":  # CONFLICT: the user exists already
                raise
        result = await session.execute(LOGIN, variable_values={"u": username, "p": password})
        return result["login"]["token"]


async def enqueue(url: str, token: str, requests: list[str]) -> list[str]:
    transport = HTTPXAsyncTransport(url=url, headers={"Authorization": f"Bearer {token}"})
    async with Client(transport=transport) as session:
        result = await session.execute(
            ENQUEUE_MANY, variable_values={"items": [{"requestData": r} for r in requests]})
    jobs = result["enqueueMany"]
    for job in jobs:
        print(f"enqueued {job['id']} {job['requestData']!r} {job['status']}")
    return [job["id"] for job in jobs]


async def listen(url: str, token: str, job_ids: list[str]) -> None:
    ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    transport = WebsocketsTransport(
        url=ws_url,
        init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],  # graphql-transport-ws
    )
    waiting = set(job_ids)
    async with Client(transport=transport) as session:
        async for result in session.subscribe(PROCESSED, variable_values={"after": "0"}):
            event = result["processed"]
            job = event["job"]
            if job["id"] not in waiting:
                continue  # an older job's event, replayed
            waiting.discard(job["id"])
            outcome = job["processedData"] if job["status"] == "COMPLETED" else job["error"]
            print(f"processed {job['id']} {job['status']} {outcome!r} cursor={event['cursor']}",
                  flush=True)
            if not waiting:
                return


async def follow(url: str, token: str, job_id: str) -> None:
    """Print the job's updates until it ends. To resume after a lost
    connection, subscribe again with `after` set to the last cursor printed."""
    ws_url = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    transport = WebsocketsTransport(
        url=ws_url, init_payload={"Authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL])
    async with Client(transport=transport) as session:
        async for result in session.subscribe(JOB_UPDATES, variable_values={"id": job_id}):
            update = result["jobUpdates"]
            job = update["job"]
            line = f"{update['kind']:<9} attempt {job['attempts']}"
            if update["kind"] == "PROGRESS":
                filled = round(job["progress"] * 20)
                line += (f" [{'#' * filled}{'.' * (20 - filled)}] {job['progress']:.0%}"
                         f" {job['progressMessage'] or ''}")
            elif job["status"] in ("COMPLETED", "FAILED"):
                outcome = job["processedData"] if job["status"] == "COMPLETED" else job["error"]
                line += f" {outcome!r}"
            print(f"{line} cursor={update['cursor']}", flush=True)
        # the subscription completed: the job has ended


async def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("requests", nargs="*", default=["hello", "world"])
    p.add_argument("--url", default=os.environ.get("USERQUEUE_URL",
                                                   "http://127.0.0.1:8000/graphql"))
    p.add_argument("--username", default=os.environ.get("USERQUEUE_USERNAME", "demo"))
    p.add_argument("--timeout", type=float, default=60, help="give up after S seconds")
    p.add_argument("--follow", action="store_true",
                   help="follow the first job's updates (jobUpdates) instead of `processed`")
    args = p.parse_args(argv)
    password = os.environ.get("USERQUEUE_PASSWORD") or getpass.getpass("Password: ")

    token = await log_in(args.url, args.username, password)
    job_ids = await enqueue(args.url, token, args.requests)
    try:
        if args.follow:
            await asyncio.wait_for(follow(args.url, token, job_ids[0]), args.timeout)
        else:
            await asyncio.wait_for(listen(args.url, token, job_ids), args.timeout)
    except TimeoutError:
        print(f"gave up after {args.timeout:g}s: are workers running?", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
