"""A TCP relay on loopback that can lose the network: ``cut()`` stops relaying in both
directions and closes nothing, as a cable pulled or a partition does. Neither end sees a reset
or a FIN, and each side's kernel still acknowledges what it sends, so TCP keepalives and
``tcp_user_timeout`` do not help the client: only timeouts of its own do. ``restore()``
resumes relaying what was held back.

``with Blackhole(host, port) as relay:`` then connect to ``relay.port``.
"""

from __future__ import annotations

import selectors
import socket
import threading
from types import TracebackType

CHUNK = 65536


class Blackhole:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="blackhole")

    def __enter__(self) -> Blackhole:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def cut(self) -> None:
        self._open.clear()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            sockets, self._sockets = self._sockets, []
        self._open.set()
        self._listener.close()
        for sock in sockets:
            sock.close()
        self._thread.join(timeout=5)

    def _adopt(self, *sockets: socket.socket) -> bool:
        """Keep ``sockets`` for close(); close them at once if the relay is closing."""
        with self._lock:
            if not self._stop.is_set():
                self._sockets += sockets
                return True
        for sock in sockets:
            sock.close()
        return False

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._adopt(client):
                return
            # A connection attempt during a cut gets no answer either.
            while not self._open.wait(0.1):
                if self._stop.is_set():
                    return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            if not self._adopt(upstream):
                return
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True,
                             name="blackhole-pump").start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not self._open.wait(0.1):
                    continue  # cut: read nothing, so nothing moves and nothing closes
                for key, _ in sel.select(timeout=0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(CHUNK)
                    except OSError:
                        data = b""
                    if not data:
                        client.close()
                        upstream.close()
                        return
                    while not self._open.is_set() and not self._stop.is_set():
                        self._open.wait(0.1)  # cut while this chunk was in flight
                    try:
                        peer[sock].sendall(data)
                    except OSError:
                        client.close()
                        upstream.close()
                        return
