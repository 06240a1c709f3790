"""uvicorn's httptools protocol with a bound on a request's head (request line and headers).

httptools buffers a header until its end arrives and uvicorn sets no limit, so a client that
sends megabytes of headers and never ends them holds that memory for as long as it likes,
with no token (a few such connections took a server from 114 MB to 1 GB). Here the bytes
received while a request's head is incomplete are counted, and past `HEAD_LIMIT` the
connection gets a 431 JSON error and is closed. The bound also covers what arrives in the
same read as the head (the start of a body, at most the API's 64 KiB), so it is well above
any head a real client sends.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEAD_LIMIT = 256 * 1024

_BODY = json.dumps(
    {
        "error": {
            "code": "headers_too_large",
            "message": f"the request line and headers take more than {HEAD_LIMIT // 1024} KiB",
        }
    }
).encode()
_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class BoundedHead(HttpToolsProtocol):
    """HttpToolsProtocol refusing a request whose head grows past HEAD_LIMIT."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # until this request's headers are complete
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > HEAD_LIMIT:
                self.transport.write(_RESPONSE)
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0  # the next request on this connection
