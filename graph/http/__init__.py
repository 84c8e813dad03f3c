"""The HTTP edge: what every request passes through before and after the schema.

view.py (GraphQL over HTTP and WebSocket handlers), middleware.py (body size),
requestid.py, limits.py (document limits), graphiql.py (the offline explorer),
health.py (/healthz, /readyz) and metrics.py (/metrics).
"""
