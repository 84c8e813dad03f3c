"""`userqueue admin ...`: the operators' commands (CONTRACT §9), for an account with role ADMIN.

    userqueue admin overview                  # the whole deployment in a few figures
    userqueue admin users --order backlog     # who is waiting, and each one's limits
    userqueue admin pause alice | resume alice
    userqueue admin limits alice --concurrency 4 --weight 2 --starts-per-minute 600
    userqueue admin failed --user alice       # the dead-letter list, newest first
    userqueue admin retry JOB_ID | retry-failed --user alice --finished-after 2026-01-01T10:00
    userqueue admin purge alice               # cancels every queued job of alice
    userqueue admin role bob admin

Each is one call of the public API; a signed-in user who is not an admin gets
FORBIDDEN. `--json` prints the data as the API answered it. The bulk changes
(retry-failed, purge) ask first on a terminal and refuse without one unless --yes.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from datetime import UTC, datetime

from .api import CliError, client
from .table import printable, shorten, table

LIMITS = "concurrency weight startsPerMinute paused"
PAGE = "pageInfo{hasNextPage endCursor}"

OVERVIEW = ("{adminOverview{users usersWaiting queued processing scheduled "
            "completedLastMinute failedLastMinute oldestWaitSeconds}}")
USERS = ("query($first:Int,$after:String,$order:AdminUserOrder){"
         "adminUsers(first:$first,after:$after,orderBy:$order){edges{cursor node{"
         f"user{{username}} queued processing scheduled failed oldestQueuedAt limits{{{LIMITS}}}"
         f"}}}} {PAGE}}}}}")
FAILED = ("query($username:String,$first:Int,$after:String){"
          "adminJobs(status:FAILED,username:$username,first:$first,after:$after){"
          f"edges{{cursor node{{id owner{{username}} finishedAt error}}}} {PAGE}}}}}")
SET_LIMITS = ("mutation($username:String!,$limits:UserLimitsInput!){"
              f"setUserLimits(username:$username,limits:$limits){{{LIMITS}}}}}")
RETRY = "mutation($id:ID!){retryJob(id:$id){id status owner{username}}}"
RETRY_FAILED = ("mutation($username:String,$finishedAfter:DateTime){"
                "retryFailed(username:$username,finishedAfter:$finishedAfter)}")
PURGE = "mutation($username:String!){purgeQueue(username:$username)}"
SET_ROLE = ("mutation($username:String!,$role:Role!){"
            "setRole(username:$username,role:$role){username role}}")

ERROR_WIDTH = 100  # characters of a failed job's error shown in the table


def call(args, query: str, **variables) -> dict:
    """One admin operation. Variables left None are not sent, so the API's own
    defaults apply (an explicit null would override `first: Int = 50`)."""
    with closing(client(args)) as c:
        return c.call(query, {k: v for k, v in variables.items() if v is not None})


def emit(args, data, render) -> None:
    """`data` as JSON with --json, else as render(data) draws it (not called then)."""
    print(json.dumps(data) if args.json else render(data))


def more(connection: dict) -> None:
    page = connection["pageInfo"]
    if page["hasNextPage"]:
        print(f"more: --after {page['endCursor']}", file=sys.stderr)


def confirm(args, question: str) -> None:
    """Go on only with --yes or a "y" typed at a terminal, so a bulk change typed by
    mistake, or run by a script that did not say --yes, changes nothing."""
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Not asked: stdin is not a terminal; pass --yes")
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed; nothing was changed")


# ---- what the tables show ----

def age(seconds: float) -> str:
    """A duration as a person reads it: 45s, 3m05s, 2h10m, 4d03h."""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def parse_time(value: str) -> datetime:
    """An API DateTime (ISO 8601, with an offset or Z) as an aware datetime."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def utc(value: str | None) -> str:
    if not value:
        return "-"
    return parse_time(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def limits_text(limits: dict) -> str:
    rate = limits["startsPerMinute"]
    text = (f"concurrency {limits['concurrency']}, weight {limits['weight']}, "
            + (f"{rate} starts/min" if rate else "no start rate limit"))
    return ("PAUSED, " + text) if limits["paused"] else text


def users_table(connection: dict, now: datetime) -> str:
    rows = []
    for edge in connection["edges"]:
        row = edge["node"]
        oldest = row["oldestQueuedAt"]
        rows.append((row["user"]["username"], row["queued"], row["processing"],
                     row["scheduled"], row["failed"],
                     age((now - parse_time(oldest)).total_seconds()) if oldest else "-",
                     limits_text(row["limits"])))
    return table(("USERNAME", "QUEUED", "PROCESSING", "SCHEDULED", "FAILED", "OLDEST QUEUED",
                  "LIMITS"), rows)


def failed_table(connection: dict) -> str:
    rows = []
    for edge in connection["edges"]:
        job = edge["node"]
        first_line = (job["error"] or "").splitlines()[:1]
        rows.append((job["id"], job["owner"]["username"], utc(job["finishedAt"]),
                     shorten(first_line[0] if first_line else "", ERROR_WIDTH)))
    return table(("ID", "OWNER", "FINISHED", "ERROR"), rows)


def overview_text(overview: dict) -> str:
    wait = overview["oldestWaitSeconds"]
    return table(None, [
        ("users", f"{overview['users']} ({overview['usersWaiting']} waiting)"),
        ("queued", f"{overview['queued']} ({overview['scheduled']} scheduled)"),
        ("processing", overview["processing"]),
        ("completed, last minute", overview["completedLastMinute"]),
        ("failed, last minute", overview["failedLastMinute"]),
        ("longest wait", "-" if wait is None else age(wait)),
    ])


# ---- commands ----

def cmd_overview(args) -> int:
    overview = call(args, OVERVIEW)["adminOverview"]
    emit(args, overview, overview_text)
    return 0


def cmd_users(args) -> int:
    users = call(args, USERS, first=args.first, after=args.after,
                 order=args.order.upper())["adminUsers"]
    emit(args, users, lambda page: users_table(page, datetime.now(UTC)))
    more(users)
    return 0


def _set_limits(args, limits: dict) -> int:
    answer = call(args, SET_LIMITS, username=args.username, limits=limits)["setUserLimits"]
    emit(args, answer, lambda limits: f"{printable(args.username)}: {limits_text(limits)}")
    return 0


def cmd_pause(args) -> int:
    return _set_limits(args, {"paused": True})


def cmd_resume(args) -> int:
    return _set_limits(args, {"paused": False})


def cmd_limits(args) -> int:
    # With no flags this is setUserLimits with an empty input: it changes nothing
    # and answers the limits, the one way to read a single user's limits without
    # paging adminUsers through every account.
    given = {"concurrency": args.concurrency, "weight": args.weight,
             "startsPerMinute": args.starts_per_minute}
    return _set_limits(args, {k: v for k, v in given.items() if v is not None})


def cmd_failed(args) -> int:
    jobs = call(args, FAILED, username=args.user, first=args.first,
                after=args.after)["adminJobs"]
    if args.json or jobs["edges"]:
        emit(args, jobs, failed_table)
    else:
        print("no FAILED jobs" + (f" of {printable(args.user)}" if args.user else ""),
              file=sys.stderr)
    more(jobs)
    return 0


def cmd_retry(args) -> int:
    job = call(args, RETRY, id=args.job_id)["retryJob"]
    emit(args, job, lambda job: f"{job['id']} retried, now {job['status']} "
                                f"(owner {printable(job['owner']['username'])})")
    return 0


def cmd_retry_failed(args) -> int:
    whose = f"of {printable(args.user)}" if args.user else "of every user"
    since = f" finished after {args.finished_after}" if args.finished_after else ""
    confirm(args, f"Retry every FAILED job {whose}{since}?")
    count = call(args, RETRY_FAILED, username=args.user,
                 finishedAfter=args.finished_after)["retryFailed"]
    emit(args, count, lambda n: f"retried {n} FAILED job(s) {whose}")
    return 0


def cmd_purge(args) -> int:
    who = printable(args.username)
    confirm(args, f"Cancel every QUEUED job of {who}, scheduled ones included?")
    count = call(args, PURGE, username=args.username)["purgeQueue"]
    emit(args, count, lambda n: f"cancelled {n} queued job(s) of {who}")
    return 0


def cmd_role(args) -> int:
    user = call(args, SET_ROLE, username=args.username, role=args.role.upper())["setRole"]
    emit(args, user, lambda user: f"{printable(user['username'])} is now {user['role']}")
    return 0


# ---- arguments ----

def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def moment(text: str) -> str:
    """--finished-after: ISO 8601; without an offset it is the local time. Sent with
    its offset, so the server and the operator agree on the instant."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return (value if value.tzinfo else value.astimezone()).isoformat()


def add_parser(sub) -> None:
    """`admin` and its actions, under the top-level parser's subcommands."""
    admin = sub.add_parser("admin", help="operators' commands (needs role ADMIN)",
                           description="Operators' commands; the account needs role ADMIN.")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name, func, help):
        sp = actions.add_parser(name, help=help, description=help)
        sp.add_argument("--json", action="store_true", help="print the data the API answered")
        sp.set_defaults(func=func)
        return sp

    def page(sp):
        sp.add_argument("--first", type=positive, metavar="N",
                        help="how many (the API's default: 50)")
        sp.add_argument("--after", metavar="CURSOR", help="the next page, after this cursor")

    action("overview", cmd_overview, "the whole deployment: users, queued, processing, "
           "finished in the last minute")

    sp = action("users", cmd_users, "every account with its queue and limits")
    sp.add_argument("--order", choices=("backlog", "username"), default="backlog",
                    help="backlog: most queued first (default); username: by name")
    page(sp)

    for name, func, verb in (("pause", cmd_pause, "start none of"),
                             ("resume", cmd_resume, "start again")):
        sp = action(name, func, f"{verb} the user's queued jobs (running ones finish)")
        sp.add_argument("username")

    sp = action("limits", cmd_limits, "show a user's limits, or change the ones given")
    sp.add_argument("username")
    sp.add_argument("--concurrency", type=int, metavar="N", help="jobs at once, 1..100")
    sp.add_argument("--weight", type=int, metavar="N", help="share of the workers, 1..100")
    sp.add_argument("--starts-per-minute", type=int, metavar="N",
                    help="job starts per minute, 0 (no limit)..100000")

    sp = action("failed", cmd_failed, "the newest FAILED jobs (the dead-letter list)")
    sp.add_argument("--user", metavar="USERNAME", help="only this user's")
    page(sp)

    sp = action("retry", cmd_retry, "put a FAILED or CANCELLED job back in its queue")
    sp.add_argument("job_id", metavar="JOB_ID")

    sp = action("retry-failed", cmd_retry_failed, "retry every FAILED job (asks first)")
    sp.add_argument("--user", metavar="USERNAME", help="only this user's")
    sp.add_argument("--finished-after", type=moment, metavar="ISO",
                    help="only those finished after this time (no offset: local time)")
    sp.add_argument("--yes", action="store_true", help="do not ask")

    sp = action("purge", cmd_purge, "cancel every QUEUED job of a user (asks first)")
    sp.add_argument("username")
    sp.add_argument("--yes", action="store_true", help="do not ask")

    sp = action("role", cmd_role, "make an account an admin, or a user again")
    sp.add_argument("username")
    sp.add_argument("role", type=str.lower, choices=("user", "admin"))
