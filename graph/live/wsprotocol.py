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
extension is absent and everything goes through ASGI as usual.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

SEND_NOW = "queue.send_now"


class FanoutWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and not self.close_sent:  # an accepted upgrade; its app runs next
            scope["extensions"][SEND_NOW] = self.send_now

    def send_now(self, text: str) -> bool:
        """Write one text message now. True once written, or when nothing will
        go out any more (the socket is closing: the app hears of it from
        `receive`); False when it should go later through the awaited send."""
        if self.disconnected or self.close_sent:
            return True
        if (not self.handshake_complete or self.initial_response is not None
                or not self.writable.is_set()):
            return False
        try:
            self.conn.send_text(text.encode())
        except InvalidState:  # the peer started closing
            return True
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True
