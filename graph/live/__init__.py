"""Live events: the Redis stream reader, and delivery to subscription listeners.

events.py reads the shard streams once per process and hands each event to its
user's listeners; fanout.py renders an event once per subscription document
(render.py) and writes it straight to the sockets (wsprotocol.py).
"""
