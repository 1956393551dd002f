"""A small HTTP proxy in front of a real Prometheus that misbehaves on demand, for the fault suite.

It runs its own asyncio loop in a thread (the service under test is a subprocess; the tests are plain
functions). Each request is forwarded to Prometheus with `Connection: close`, and the answer is then
passed on, delayed, trickled, replaced or cut according to the current `Fault`. A fault can be limited to
queries whose PromQL contains a substring (`match`), e.g. only the completion rate, or everything but the
fast path's query.

    proxy = FaultProxy(prometheus.url); proxy.start()       # proxy.url goes to `gpumix serve --prometheus`
    proxy.set(Fault("trickle", every=0.3))                  # one byte per 0.3 s
    proxy.set(Fault("status", status=503, body=b"..."))     # an HTTP error
    proxy.set(Fault("body", body=b"[]"))                    # 200 with this body
    proxy.set(Fault("close"))                               # accept, read, close without answering
    proxy.set(None)                                         # pass through
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import urllib.parse
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    kind: str  # delay | trickle | status | body | close | reset | truncate
    delay: float = 0.0  # delay: seconds before the (real) answer
    every: float = 0.2  # trickle: seconds between bytes
    status: int = 200  # status / body: the HTTP status sent
    body: bytes = b""  # status / body: what is sent instead of Prometheus's answer
    match: str | None = None  # only queries whose PromQL contains this
    unless: str | None = None  # not queries whose PromQL contains this


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault: Fault | None = None
        self.requests = 0
        self.faulted = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fault-proxy")
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def retarget(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def set(self, fault: Fault | None) -> None:
        self.fault = fault  # read by the proxy thread per request: an atomic reference swap

    def _applies(self, fault: Fault | None, head: bytes) -> bool:
        if fault is None:
            return False
        target = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
        query = " ".join(urllib.parse.parse_qs(urllib.parse.urlsplit(target).query).get("query", []))
        if fault.match is not None and fault.match not in query:
            return False
        return not (fault.unless is not None and fault.unless in query)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.requests += 1
        fault = self.fault
        if not self._applies(fault, head):
            fault = None
        else:
            self.faulted += 1
        try:
            await self._answer(fault, head, writer)
        except (ConnectionError, OSError):
            pass  # the client gave up (its deadline): nothing to do
        finally:
            writer.close()

    async def _forward(self, head: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]
        request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(request)
            await up_writer.drain()
            return await up_reader.read()
        finally:
            up_writer.close()

    async def _answer(self, fault: Fault | None, head: bytes, writer: asyncio.StreamWriter) -> None:
        if fault is None:
            try:
                writer.write(await self._forward(head))
            except OSError:  # Prometheus is down: so is the proxy's answer
                return
            await writer.drain()
            return
        if fault.kind == "close":
            return
        if fault.kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if fault.kind in ("status", "body"):
            reason = b"OK" if fault.status == 200 else b"Fault"
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (fault.status, reason, len(fault.body)) + fault.body)
            await writer.drain()
            return
        answer = await self._forward(head)
        if fault.kind == "delay":
            await asyncio.sleep(fault.delay)
            writer.write(answer)
        elif fault.kind == "trickle":
            for i in range(len(answer)):
                writer.write(answer[i:i + 1])
                await writer.drain()
                await asyncio.sleep(fault.every)
        elif fault.kind == "truncate":
            writer.write(answer[: max(1, len(answer) * 2 // 3)])
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        await writer.drain()
