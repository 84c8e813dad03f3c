"""The HTTP edge: what every request passes through before and after the schema.

view.py (GraphQL over HTTP and WebSocket handlers), middleware.py (body size),
requestid.py, limits.py (document limits), graphiql.py (the offline explorer),
health.py (/healthz, /readyz) and metrics.py (/metrics). A document seen before
runs straight on graphql-core (prepared.py), plain objects completed by compiled
steps (completion.py), aliased `enqueue`s stored by one script call (batching.py),
and one user's concurrent single `enqueue`s too (grouping.py); documents of plain
`enqueue` fields alone are answered without graphql-core's execution (compiled.py).
"""
