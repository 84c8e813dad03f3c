"""uvicorn's WebSocket protocol, plus a synchronous send for the event fan-out.

Through ASGI, every message a listener gets costs an awaited `send` through
each middleware and a task switch per listener. For `processed`, where one
finished job goes out to every listener of its user at once, the hub writes
straight to the sockets instead: this protocol puts a plain function in the
connection's scope, `scope["extensions"][SEND_NOW](text) -> bool`, that frames
the text and writes it to the transport at once.

It refuses (returns False) instead of queueing without bound when the
transport's buffer is over its high-water mark (a slow client): the caller
then falls back to the awaited ASGI send, which waits for the buffer to
drain. On a socket that is closing it drops the message: the app learns of
the close from `receive` and ends the subscription.

`python -m graph` runs uvicorn with this class; under any other server the
extension is absent and everything goes through ASGI as usual. What it needs
of uvicorn's internals is in graph/adapters.py.
"""

from __future__ import annotations

from ..adapters import WebSocketProtocol

SEND_NOW = "queue.send_now"


class FanoutWebSocketProtocol(WebSocketProtocol):
    """uvicorn's protocol; its `send_now` (graph/adapters.py) goes in the scope."""

    def accepted(self, scope: dict) -> None:
        scope["extensions"][SEND_NOW] = self.send_now
