"""`userqueue` (or `python -m client`): the queue from a terminal, over the public GraphQL API.

    userqueue register alice            # asks for a password
    userqueue login alice               # keeps the token in a 0600 file
    userqueue enqueue "hello" "world"   # or one request per line on stdin
    userqueue dequeue --wait 10         # the next finished job's result
    userqueue watch                     # live `processed` events, a progress line and a
                                        # progress bar per running job (jobUpdates)
    userqueue stats | job ID | logout
    userqueue admin users | pause | limits | failed | retry | ...   # operators: client/admin.py

Passwords are read from the terminal (no echo), from the first line of stdin
with --password-stdin, or from USERQUEUE_PASSWORD; never from the command line,
where other users could see them in the process list.

Settings: --url or USERQUEUE_URL (default http://127.0.0.1:8000/graphql);
--token-file or USERQUEUE_TOKEN_FILE (default ~/.config/userqueue/token);
USERQUEUE_TOKEN, when set, is used instead of the file.

Exit codes: 0 done; 1 an error (printed on stderr with its code); 3 `dequeue`
found nothing to return.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, suppress

from . import admin
from .api import (
    DEFAULT_TOKEN_FILE,
    DEFAULT_URL,
    Client,
    CliError,
    client,
    graphql_error,
    load_token,
    save_token,
    token_path,
)

DEFAULT_BATCH = 500  # items per enqueueMany call; the server allows QUEUE_MAX_BATCH (1000)
EXIT_ERROR, EXIT_EMPTY = 1, 3

JOB_FIELDS = "id requestData status processedData error attempts createdAt finishedAt"


# ---- commands ----

def read_password(args, confirm: bool = False) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("--password-stdin: nothing on stdin")
        return line.rstrip("\r\n")
    env = os.environ.get("USERQUEUE_PASSWORD")
    if env:
        return env
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password: use --password-stdin or "
                       "USERQUEUE_PASSWORD")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != password:
        raise CliError("the passwords differ")
    return password


def cmd_register(args) -> int:
    password = read_password(args, confirm=True)
    with closing(client(args, auth=False)) as c:
        user = c.call("mutation($u:String!,$p:String!){register(username:$u,password:$p)"
                      "{id username}}", {"u": args.username, "p": password})["register"]
    print(f"registered {user['username']} ({user['id']})")
    if args.login:
        return _login(args, password)
    return 0


def cmd_login(args) -> int:
    return _login(args, read_password(args))


def _login(args, password: str) -> int:
    with closing(client(args, auth=False)) as c:
        data = c.call("mutation($u:String!,$p:String!){login(username:$u,password:$p)"
                      "{token expiresAt user{username}}}",
                      {"u": args.username, "p": password})["login"]
    path = token_path(args)
    save_token(path, data["token"])
    print(f"logged in as {data['user']['username']} until {data['expiresAt']}; "
          f"token saved in {path}")
    return 0


def cmd_logout(args) -> int:
    path = token_path(args)
    with suppress(FileNotFoundError):
        path.unlink()
    print(f"token removed from {path}")
    return 0


def _requests(args) -> Iterator[str]:
    if args.data:
        yield from args.data
        return
    for line in sys.stdin:
        line = line.rstrip("\r\n")
        if line:  # blank lines are skipped
            yield line


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def cmd_enqueue(args) -> int:
    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    query = f"mutation($i:[EnqueueInput!]!){{enqueueMany(items:$i){{{JOB_FIELDS}}}}}"
    count = 0
    with closing(client(args)) as c:
        for batch in _batches(_requests(args), args.batch):
            items = []
            for data in batch:
                item = {"requestData": data}
                if args.key_prefix is not None:
                    item["idempotencyKey"] = f"{args.key_prefix}{count + len(items)}"
                items.append(item)
            try:
                jobs = c.call(query, {"i": items})["enqueueMany"]
            except CliError as exc:
                if count:
                    exc.args = (f"{exc} (after {count} request(s) were enqueued)",)
                raise
            for job in jobs:
                print(json.dumps(job) if args.json else job["id"])
            count += len(jobs)
            sys.stdout.flush()
    if not args.json:
        print(f"enqueued {count} request(s)", file=sys.stderr)
    return 0


def cmd_dequeue(args) -> int:
    query = f"mutation($w:Float){{dequeue(waitSeconds:$w){{{JOB_FIELDS}}}}}"
    got = 0
    with closing(client(args)) as c:
        while True:
            job = c.call(query, {"w": args.wait})["dequeue"]
            if job is None:
                break
            got += 1
            if args.json:
                print(json.dumps(job))
            elif job["status"] == "FAILED":
                print(f"{job['id']} FAILED: {job['error']}")
            else:
                print(job["processedData"])
            sys.stdout.flush()
            if not args.all:
                break
    return 0 if got else EXIT_EMPTY


def cmd_job(args) -> int:
    with closing(client(args)) as c:
        job = c.call(f"query($id:ID!){{job(id:$id){{{JOB_FIELDS}}}}}", {"id": args.id})["job"]
    if job is None:
        raise CliError(f"no job {args.id}", "NOT_FOUND")
    print(json.dumps(job, indent=None if args.json else 2))
    return 0


def cmd_stats(args) -> int:
    with closing(client(args)) as c:
        stats = c.call("{queueStats{queued processing ready}}")["queueStats"]
    print(json.dumps(stats) if args.json else
          f"queued {stats['queued']}  processing {stats['processing']}  ready {stats['ready']}")
    return 0


# ---- watch: the `processed` subscription over graphql-transport-ws ----

SUBSCRIPTION = ("subscription($after:String){processed(after:$after){cursor job{"
                + JOB_FIELDS + "}}}")
# each running job's bar: jobUpdates, on the same socket, operation id "job:<id>"
JOB_UPDATES = ("subscription($id:ID!){jobUpdates(id:$id){cursor kind job{"
               "id status attempts progress progressMessage}}}")
# the running jobs, each of which gets a bar (the server answers this from Redis)
RUNNING = "{jobs(status:PROCESSING,first:%d){edges{node{id status}}}}"
MAX_BARS = 10
RUNNING_PAGE = MAX_BARS
BAR_WIDTH = 24
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")


def ws_url(url: str) -> str:
    if url.startswith("https://"):
        return "wss://" + url[len("https://"):]
    if url.startswith("http://"):
        return "ws://" + url[len("http://"):]
    return url


class Progress:
    """Lines on stderr, redrawn: events seen, their outcomes, the queue's counts,
    then a bar per running job (at most MAX_BARS), fed by jobUpdates."""

    def __init__(self, enabled: bool, stats: Client | None, total: int | None):
        self.enabled = enabled
        self.stats_client = stats
        self.total = total
        self.completed = self.failed = 0
        self.started = time.monotonic()
        self.stats: dict | None = None
        self._stats_at = 0.0
        self._lines = 0  # lines drawn last time, to go back over
        self.running: dict[str, dict] = {}  # job id: the job of its last update
        self.new_running: list[str] = []  # PROCESSING jobs seen, not yet subscribed to

    def event(self, job: dict) -> None:
        if job["status"] == "FAILED":
            self.failed += 1
        else:
            self.completed += 1
        self.draw()

    def draw(self, force_stats: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.stats_client and (force_stats or now - self._stats_at >= 1.0):
            self._stats_at = now
            with suppress(CliError):
                self.stats = self.stats_client.call("{queueStats{queued processing ready}}")[
                    "queueStats"]
                edges = self.stats_client.call(RUNNING % RUNNING_PAGE)["jobs"]["edges"]
                self.new_running += [e["node"]["id"] for e in edges
                                     if e["node"]["status"] == "PROCESSING"
                                     and e["node"]["id"] not in self.running]
        seen = self.completed + self.failed
        text = f"processed {seen}" + (f"/{self.total}" if self.total else "")
        text += f" ({self.completed} completed, {self.failed} failed)"
        if self.stats:
            text += (f" | queued {self.stats['queued']} processing {self.stats['processing']}"
                     f" ready {self.stats['ready']}")
        elapsed = now - self.started
        if seen and elapsed > 0:
            text += f" | {seen / elapsed:.1f}/s"
        lines = [text] + [bar(job) for job in list(self.running.values())[:MAX_BARS]]
        self.clear()
        sys.stderr.write("\n".join(lines))
        sys.stderr.flush()
        self._lines = len(lines)

    def clear(self) -> None:
        """Go back over what was drawn (before an event's line is printed there)."""
        if self._lines:
            sys.stderr.write(("\x1b[%dA" % (self._lines - 1) if self._lines > 1 else "")
                             + "\r\x1b[J")
            self._lines = 0

    def job_update(self, update: dict) -> None:
        """A running job's update: its bar moves, or goes once the job has ended."""
        job = update["job"]
        if update["kind"] in TERMINAL:
            self.running.pop(job["id"], None)
        elif job["status"] == "PROCESSING":
            self.running[job["id"]] = job
        else:  # QUEUED (handed back) or RETRYING: waits without a bar
            self.running.pop(job["id"], None)
        self.draw()

    def done(self) -> None:
        if self.enabled:
            self.running.clear()
            self.draw(force_stats=True)
            sys.stderr.write("\n")
            sys.stderr.flush()


def bar(job: dict) -> str:
    """`  <id> [#########...............]  37.5% attempt 1: message`"""
    value = job.get("progress")
    filled = round((value or 0) * BAR_WIDTH)
    shown = "  started" if value is None else f"{value * 100:6.1f}%"
    text = f"  {job['id']} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {shown}"
    text += f" attempt {job['attempts']}"
    if job.get("progressMessage"):
        text += f": {job['progressMessage']}"
    return text


def _print_event(args, event: dict) -> None:
    job = event["job"]
    if args.json:
        line = json.dumps(event)
    else:
        result = job["processedData"] if job["status"] == "COMPLETED" else job["error"]
        line = f"{event['cursor']} {job['id']} {job['status']} {result}"
    if args.progress_enabled:
        args.progress_lines.clear()  # clear the progress lines before printing over them
        sys.stderr.flush()
    print(line, flush=True)


def cmd_watch(args) -> int:
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
    from websockets.sync.client import connect

    token = load_token(args)
    args.progress_enabled = (sys.stderr.isatty() if args.progress is None else args.progress)
    stats = Client(args.url, token) if args.progress_enabled else None
    progress = Progress(args.progress_enabled, stats, args.count)
    args.progress_lines = progress
    after, seen, retries, acked = args.after, 0, 0, False
    deadline = time.monotonic() + args.timeout if args.timeout else None
    progress.draw(force_stats=True)
    try:
        while True:
            try:
                with connect(ws_url(args.url), subprotocols=["graphql-transport-ws"],
                             open_timeout=10, max_size=2 ** 24) as ws:
                    ws.send(json.dumps({"type": "connection_init",
                                        "payload": {"Authorization": f"Bearer {token}"}}))
                    ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
                        "query": SUBSCRIPTION, "variables": {"after": after}}}))
                    watched: set[str] = set()  # jobs whose bar this socket feeds
                    progress.running.clear()
                    while True:
                        for job_id in progress.new_running:
                            if job_id not in watched and len(watched) < MAX_BARS:
                                watched.add(job_id)
                                ws.send(json.dumps({"id": "job:" + job_id, "type": "subscribe",
                                                    "payload": {"query": JOB_UPDATES,
                                                                "variables": {"id": job_id}}}))
                        progress.new_running.clear()
                        timeout = None if deadline is None else deadline - time.monotonic()
                        if timeout is not None and timeout <= 0:
                            return 0
                        try:
                            wait = timeout if not progress.enabled else min(timeout or 1.0, 1.0)
                            message = json.loads(ws.recv(timeout=wait))
                        except TimeoutError:
                            if deadline is not None and time.monotonic() >= deadline:
                                return 0
                            progress.draw()  # looks for newly running jobs now and then
                            continue
                        kind = message.get("type")
                        operation = message.get("id") or ""
                        if operation.startswith("job:"):  # a bar's update, or its end
                            payload = message.get("payload") or {}
                            if kind == "next" and not payload.get("errors"):
                                progress.job_update(payload["data"]["jobUpdates"])
                            elif kind in ("complete", "error"):
                                watched.discard(operation[4:])
                                progress.running.pop(operation[4:], None)
                            continue
                        if kind == "ping":
                            ws.send(json.dumps({"type": "pong"}))
                        elif kind == "connection_ack":
                            retries, acked = 0, True
                        elif kind == "next":
                            payload = message.get("payload") or {}
                            if payload.get("errors"):
                                raise graphql_error(payload["errors"])
                            event = payload["data"]["processed"]
                            after = event["cursor"]
                            seen += 1
                            _print_event(args, event)
                            progress.event(event["job"])
                            if args.count and seen >= args.count:
                                return 0
                        elif kind == "error":
                            raise graphql_error(message.get("payload") or [])
                        elif kind == "complete":
                            return 0
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                if code == 4403:
                    raise CliError("the server refused the token; run: userqueue "
                                   "login USERNAME", "UNAUTHENTICATED") from None
                if code is not None and 4400 <= code < 4500:
                    raise CliError(f"the server closed the subscription: {code} "
                                   f"{exc.rcvd.reason}") from None
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                if not acked:  # never got in: a wrong URL, or no server
                    raise CliError(f"cannot subscribe at {ws_url(args.url)}: {exc}") from None
            # the connection dropped: resume after the last cursor, missing nothing
            retries += 1
            if retries > args.retries:
                raise CliError(f"the connection to {ws_url(args.url)} keeps dropping")
            time.sleep(min(0.5 * 2 ** retries, 10))
    except KeyboardInterrupt:
        return 0
    finally:
        progress.done()
        if after and after != args.after:
            print(f"last cursor: {after} (resume with: watch --after {after})", file=sys.stderr)
        if stats:
            stats.close()


# ---- arguments ----

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="userqueue",
                                description="The userqueue service from a terminal.",
                                epilog="Exit codes: 0 done, 1 error, 3 nothing to dequeue.")
    p.add_argument("--url", default=os.environ.get("USERQUEUE_URL", DEFAULT_URL),
                   help="the GraphQL endpoint (USERQUEUE_URL; default %(default)s)")
    p.add_argument("--token-file", help="where the token is kept (USERQUEUE_TOKEN_FILE; "
                   f"default {DEFAULT_TOKEN_FILE})")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def password_flag(sp):
        sp.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")

    sp = sub.add_parser("register", help="create an account")
    sp.add_argument("username")
    password_flag(sp)
    sp.add_argument("--login", action="store_true", help="log in right after")
    sp.set_defaults(func=cmd_register)

    sp = sub.add_parser("login", help="log in and keep the token (file mode 0600)")
    sp.add_argument("username")
    password_flag(sp)
    sp.set_defaults(func=cmd_login)

    sp = sub.add_parser("logout", help="forget the kept token")
    sp.set_defaults(func=cmd_logout)

    sp = sub.add_parser("enqueue", help="enqueue requests: the arguments, or one per stdin line")
    sp.add_argument("data", nargs="*", help="request data; none: read stdin, one request a line")
    sp.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                    help="requests per enqueueMany call (default %(default)s)")
    sp.add_argument("--key-prefix", help="idempotency keys PREFIX0, PREFIX1, ... by position, "
                    "so re-running the same input enqueues nothing twice")
    sp.add_argument("--json", action="store_true", help="print each job as JSON, not its id")
    sp.set_defaults(func=cmd_enqueue)

    sp = sub.add_parser("dequeue", help="take the oldest finished job's result")
    sp.add_argument("--wait", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds (at most 30) for one")
    sp.add_argument("--all", action="store_true", help="keep going until none is left")
    sp.add_argument("--json", action="store_true", help="print the whole job as JSON")
    sp.set_defaults(func=cmd_dequeue)

    sp = sub.add_parser("watch", help="print `processed` events live, with a progress line "
                        "and a bar per running job")
    sp.add_argument("--after", help="a cursor from an earlier event: replay what followed it")
    sp.add_argument("--count", type=int, help="exit after N events")
    sp.add_argument("--timeout", type=float, help="exit after S seconds")
    sp.add_argument("--json", action="store_true", help="one JSON object per event")
    sp.add_argument("--retries", type=int, default=10,
                    help="reconnections in a row before giving up (default %(default)s)")
    group = sp.add_mutually_exclusive_group()
    group.add_argument("--progress", dest="progress", action="store_true", default=None,
                       help="draw the progress line on stderr (default: when it is a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false")
    sp.set_defaults(func=cmd_watch)

    sp = sub.add_parser("job", help="show one job")
    sp.add_argument("id")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_job)

    sp = sub.add_parser("stats", help="your queue's counts")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_stats)

    admin.add_parser(sub)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        prefix = f"error: {exc.code}: " if exc.code else "error: "
        print(prefix + str(exc), file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
