"""A TCP relay in front of the fake's gRPC server, so that a fault can reset a client's real connection.

gRPC servers do not let a handler drop the connection its call came on. The fake
listens here instead, relays bytes to the gRPC server, and knows which client
connection each upstream connection serves (the handler's ``context.peer()`` is the
relay's upstream address). :meth:`ResettableRelay.reset` then sends the client a TCP
reset, exactly what a crashed load balancer or a dropped NAT entry gives it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from dataclasses import dataclass, field

from kmsbox.testing.fakes import abort_connection

__all__ = ["ResettableRelay"]

_POLL = 0.5  # seconds between checks of the stop flag
_CHUNK = 65536


@dataclass(eq=False)
class _Connection:
    client: socket.socket
    upstream: socket.socket
    reset_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)


class ResettableRelay:
    """Accepts on ``host:port`` (0: any free port) and relays each connection to ``upstream``."""

    def __init__(self, host: str, port: int, upstream: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family)
        self._upstream = upstream
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[int, _Connection] = {}
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="fake-gcp-relay", daemon=True)
        self._acceptor.start()

    def __repr__(self) -> str:
        return f"ResettableRelay(port={self.port}, connections={len(self._connections)})"

    @property
    def port(self) -> int:
        """The port clients connect to."""
        return int(self._listener.getsockname()[1])

    @property
    def connections(self) -> int:
        """Client connections being relayed now (a client that closed its channel has none)."""
        with self._lock:
            return len(self._connections)

    def reset(self, peer: str, timeout: float = 5.0) -> bool:
        """Reset the client connection behind the gRPC peer ``ipv4:127.0.0.1:PORT``; True once done."""
        try:
            port = int(peer.rsplit(":", 1)[1])
        except (IndexError, ValueError):
            return False
        with self._lock:
            connection = self._connections.get(port)
        if connection is None:
            return False
        connection.reset_requested = True
        with contextlib.suppress(OSError):  # wakes the relay thread, which sends the reset itself
            connection.upstream.shutdown(socket.SHUT_RDWR)
        return connection.done.wait(timeout)

    def stop(self) -> None:
        """Stop accepting, end every connection and join the threads."""
        self._stopping.set()
        self._acceptor.join()
        self._listener.close()
        for thread in list(self._threads):
            thread.join()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not selector.select(_POLL):
                    continue
                try:
                    client, _ = self._listener.accept()
                except OSError:
                    continue
                try:
                    upstream = socket.create_connection(self._upstream)
                except OSError:
                    abort_connection(client)
                    continue
                connection = _Connection(client, upstream)
                thread = threading.Thread(target=self._relay, args=(connection,), name="fake-gcp-relay-conn")
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    def _relay(self, connection: _Connection) -> None:
        local_port = int(connection.upstream.getsockname()[1])
        with self._lock:
            self._connections[local_port] = connection
        peers = {connection.client: connection.upstream, connection.upstream: connection.client}
        open_sides = set(peers)
        try:
            with selectors.DefaultSelector() as selector:
                for sock in peers:
                    selector.register(sock, selectors.EVENT_READ)
                while open_sides and not self._stopping.is_set() and not connection.reset_requested:
                    for key, _ in selector.select(_POLL):
                        source = key.fileobj
                        assert isinstance(source, socket.socket)
                        try:
                            data = source.recv(_CHUNK)
                        except OSError:
                            data = b""
                        if connection.reset_requested:
                            break
                        if data:
                            with contextlib.suppress(OSError):
                                peers[source].sendall(data)
                            continue
                        # One side finished sending: pass the end on, keep relaying the other way.
                        selector.unregister(source)
                        open_sides.discard(source)
                        with contextlib.suppress(OSError):
                            peers[source].shutdown(socket.SHUT_WR)
        finally:
            with self._lock:
                self._connections.pop(local_port, None)
            if connection.reset_requested or self._stopping.is_set():
                abort_connection(connection.client)
            else:
                connection.client.close()
            connection.upstream.close()
            connection.done.set()
