"""The gunicorn worker of the service: threads, a deadline on reading each request, and
gunicorn's own error answers in the service's JSON error shape.

Why not gunicorn's ``sync`` worker: it reads a request on its only thread with no time limit,
so a client that sends a request line and part of its headers, then nothing, holds the worker
until gunicorn's worker timeout kills it (60 s); two such connections stopped a two-worker
service, ``/health`` included. This worker is gunicorn's ``gthread`` worker (a main thread
polls the connections, a pool of ``threads`` answers the requests) with two changes:

- **read deadline**: from the first byte of a request, its line, headers and body must arrive
  within ``RECOMMENDER_REQUEST_READ_TIMEOUT`` seconds (default 10). Past it the connection is
  closed (logged, without any of its content). A slow or half-open client so holds one thread
  for at most that long, and the other threads and workers keep answering. An idle connection
  holds no thread at all: the poller only hands a connection to a thread when bytes arrive;
  idle keep-alive connections close after gunicorn's ``keepalive`` seconds.
- **JSON errors**: the requests gunicorn refuses before the app sees them (a malformed request
  line, a URL over ``limit_request_line``: 414, headers over ``limit_request_field_size`` or
  ``limit_request_fields``: 431, ...) get ``{"error": {"code", "message"}}`` like every other
  error, and the log line names the error class, never the request's content (a URL can hold
  a raw patient id).

A deployment facing the internet still belongs behind a reverse proxy (``service/README.md``).
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import time
from concurrent import futures
from functools import partial

from gunicorn.http import errors as http_errors
from gunicorn.util import write_nonblock
from gunicorn.workers.gthread import TConn, ThreadWorker

READ_TIMEOUT_VARIABLE = "RECOMMENDER_REQUEST_READ_TIMEOUT"
DEFAULT_READ_TIMEOUT = 10.0
#: Seconds a response write may block (a client that stops reading its answer).
WRITE_TIMEOUT = 30.0


def read_timeout() -> float:
    """``RECOMMENDER_REQUEST_READ_TIMEOUT`` in seconds, in (0, 300]; ValueError naming it."""
    text = os.environ.get(READ_TIMEOUT_VARIABLE, str(DEFAULT_READ_TIMEOUT))
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 300:
        raise ValueError(
            f"{READ_TIMEOUT_VARIABLE} must be a number of seconds in (0, 300]; got {text!r}"
        )
    return value


class DeadlineSocket:
    """A client socket whose reads share one deadline per request (see the module doc).

    A read past the deadline returns end-of-file, so gunicorn's parser treats the client as
    gone (closes the connection, no traceback). Everything else is the wrapped socket's.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline = float("inf")
        self.expired = False

    def start(self, seconds: float) -> None:
        """A new request begins: its reads must finish within ``seconds``."""
        self.deadline, self.expired = time.monotonic() + seconds, False

    def recv(self, size: int, *flags) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.expired = True
            return b""
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv(size, *flags)
        except TimeoutError:
            self.expired = True
            return b""

    def sendall(self, data, *flags) -> None:
        self._sock.settimeout(WRITE_TIMEOUT)
        self._sock.sendall(data, *flags)

    def send(self, data, *flags) -> int:
        self._sock.settimeout(WRITE_TIMEOUT)
        return self._sock.send(data, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class ServiceWorker(ThreadWorker):
    """gunicorn's gthread worker with a per-request read deadline and JSON error answers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout()
        self._accepting = False

    def accept(self, server, listener) -> None:
        """As gthread's, with the client socket wrapped in a :class:`DeadlineSocket`."""
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, DeadlineSocket(sock), client, server)
        self.nr_conns += 1
        with self._lock:
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )

    def run(self) -> None:
        """gthread's loop, then a graceful end that answers what was already accepted.

        gthread stops polling as soon as it is told to stop (a reload's graceful restart, a
        SIGTERM), and drops connections it had accepted but not yet read: their clients saw
        "connection reset" during every reload. Here, once stopped, the worker closes its
        listening sockets (the other workers keep accepting), then keeps serving the
        connections it holds until they are answered, at most ``read_timeout`` seconds.
        """
        for sock in self.sockets:
            sock.setblocking(False)
        while self.alive:
            self.notify()
            free = len(self.futures) < self.cfg.threads
            self._listen(free and self.nr_conns < self.worker_connections)
            if free:
                self._poll(1.0)  # a new connection or bytes on a held one wake it
            else:  # nothing to accept: wake when a thread is done, not after a 1 s select
                self._reap(1.0)
                self._poll(0)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
        self._listen(False)
        for sock in self.sockets:
            sock.close()
        deadline = time.monotonic() + self.read_timeout
        while self.nr_conns > 0 and time.monotonic() < deadline:
            self.notify()
            self._poll(0.05)
            self.murder_keepalived()
        self.tpool.shutdown(False)
        self.poller.close()
        futures.wait(self.futures, timeout=self.cfg.graceful_timeout)

    def _listen(self, accepting: bool) -> None:
        """Poll the listening sockets only while a request thread is free.

        gthread accepts whenever a connection waits, even with every thread busy (with slow
        clients, say): the requests it accepted then queue behind them in this worker while
        another worker idles. Left in the kernel's backlog, they go to a worker that can
        answer them now.
        """
        if accepting == self._accepting:
            return
        with self._lock:
            for sock in self.sockets:
                if accepting:
                    acceptor = partial(self.accept, sock.getsockname())
                    self.poller.register(sock, selectors.EVENT_READ, acceptor)
                else:
                    self.poller.unregister(sock)
        self._accepting = accepting

    def _poll(self, timeout: float) -> None:
        for key, _ in self.poller.select(timeout):
            key.data(key.fileobj)
        self._reap(0)

    def _reap(self, timeout: float) -> None:
        done = futures.wait(self.futures, timeout=timeout, return_when=futures.FIRST_COMPLETED)
        for future in done.done:
            self.futures.remove(future)

    def enqueue_req(self, conn) -> None:
        conn.sock.start(self.read_timeout)  # bytes arrived: a request begins
        super().enqueue_req(conn)

    def handle(self, conn):
        result = super().handle(conn)
        if conn.sock.expired:
            self.log.info(
                "closed a connection from %s: no complete request within %g s (%s)",
                conn.client[0] if conn.client else "?",
                self.read_timeout,
                READ_TIMEOUT_VARIABLE,
            )
            return (False, conn)
        return result

    def handle_error(self, req, client, addr, exc) -> None:
        """Gunicorn's refusals as JSON errors; the log names the class, not the content."""
        status, code, message = _refusal(exc, self.cfg)
        if status == 500:
            self.log.exception("error handling a request")
        else:
            self.log.warning(
                "refused a request from %s: %s (%s)",
                addr[0] if addr else "?",
                status,
                type(exc).__name__,
            )
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        reason = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
        head = (
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1")
        try:
            write_nonblock(client, head + body)
        except OSError:
            pass


def _refusal(exc: BaseException, cfg) -> tuple[int, str, str]:
    """(status, code, message) for an exception gunicorn raised while reading a request."""
    if isinstance(exc, http_errors.LimitRequestLine):
        return (
            414,
            "uri_too_long",
            f"request line longer than {cfg.limit_request_line} bytes; send long input in a "
            "POST body",
        )
    if isinstance(exc, http_errors.LimitRequestHeaders):
        return (
            431,
            "headers_too_large",
            f"request headers over the limits ({cfg.limit_request_fields} fields of at most "
            f"{cfg.limit_request_field_size} bytes each)",
        )
    if isinstance(exc, http_errors.UnsupportedTransferCoding):
        return 501, "not_implemented", "unsupported Transfer-Encoding"
    if isinstance(exc, (http_errors.ParseException, http_errors.NoMoreData)) or isinstance(
        exc, (ValueError, UnicodeError)
    ):
        return 400, "bad_request", "malformed HTTP request"
    return 500, "internal_error", "internal server error"
