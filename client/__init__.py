"""The `userqueue` command: the queue from a terminal, over the public GraphQL API only.

A client of the service, not part of it: it imports nothing of graph/, engine/ or workers/.
"""
