"""Content negotiation: which of our media types a client's `Accept` header prefers.

GraphQL over HTTP serves `application/json` (what version 1 clients get) and
`application/graphql-response+json` (the spec's newer type, whose status codes
tell a request error from an executed one). The client's preference is its
q-values first, then the order of its header, as graphql-http's reference
server reads it. A tie between the two (`*/*`, `application/*`) and a header
that names neither get `application/json`: today's answer, never a 406.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from urllib.request import parse_http_list  # commas inside quoted strings stay put

JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
OFFERED = (JSON, GRAPHQL_RESPONSE)  # the first is the default

_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")  # RFC 9110 §12.4.2


def media_ranges(accept: str) -> Iterator[tuple[str, str, float]]:
    """(type, subtype, q) of each well-formed range of an Accept header, in its
    order; malformed ranges (no `/`, `*/json`, a q that is not a qvalue) are skipped."""
    for element in parse_http_list(accept):
        media_range, *params = element.split(";")
        type_, _, subtype = media_range.strip().lower().partition("/")
        if not type_ or not subtype or (type_ == "*" and subtype != "*"):
            continue
        q = "1"
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                q = value.strip()
                break  # what follows q is accept-ext, not the media type's parameters
        if _QVALUE.fullmatch(q):
            yield type_, subtype, float(q)


def _specificity(media_type: str, type_: str, subtype: str) -> int | None:
    """How closely a range names `media_type` (2 exactly, 1 `type/*`, 0 `*/*`), or None."""
    offered_type, offered_subtype = media_type.split("/")
    if type_ == "*":
        return 0
    if type_ != offered_type:
        return None
    if subtype == "*":
        return 1
    return 2 if subtype == offered_subtype else None


def preferred(accept: str | None, offered: Sequence[str] = OFFERED) -> str:
    """The offered media type that `accept` prefers; `offered[0]` when none is acceptable.

    Each offer takes the q of the most specific range that names it (RFC 9110
    §12.5.1); the highest q wins, then the range that comes first in the
    header, then the earlier offer.
    """
    ranges = list(media_ranges(accept or ""))
    best, best_rank = offered[0], None
    for media_type in offered:
        matches = [(specificity, -position, q) for position, (type_, subtype, q)
                   in enumerate(ranges)
                   if (specificity := _specificity(media_type, type_, subtype)) is not None]
        if not matches:
            continue
        _, first, q = max(matches)
        if q > 0 and (best_rank is None or (q, first) > best_rank):
            best, best_rank = media_type, (q, first)
    return best
