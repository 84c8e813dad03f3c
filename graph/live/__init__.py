"""Live events: the Redis stream reader, and delivery to subscription listeners.

events.py reads the shard streams once per process and hands each event to its
user's listeners; subscription.py holds the rules every `processed` subscription
starts and ends by; fanout.py renders an event once per subscription document
(render.py) and writes it straight to the sockets (wsprotocol.py). What these
need of strawberry's and uvicorn's internals is in graph/adapters.py.
"""
