"""The admin socket: a Unix socket, one JSON request line in, one JSON reply line out.

Access is the socket file's mode (0600 or 0660 from the config), set before the node answers
anything. Requests: ``{"op": "status"}`` -> the node's status; ``{"op": "digest", "nonce":
HEX}`` -> per link, the store's key count, a SHA-256 of its key IDs and an HMAC under the
caller's nonce of its committed keys (two nodes compare stores without showing a key). Any other
request gets ``{"ok": false, "error": ...}``; the node keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path
from typing import Awaitable, Callable

MAX_REQUEST_BYTES = 64 * 1024

Handler = Callable[[dict], Awaitable[dict]]


class AdminSocketError(RuntimeError):
    pass


class AdminServer:
    def __init__(self, path: Path, mode: int, handlers: dict[str, Handler]):
        self.path, self.mode, self.handlers = Path(path), mode, handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise AdminSocketError(f"admin socket {self.path} exists and is not a socket")
            if _answers(self.path):
                raise AdminSocketError(f"admin socket {self.path}: another node answers there")
            self.path.unlink()        # left behind by a node that died
        old = os.umask(0o177)         # no window in which others may connect
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path),
                                                           limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                try:
                    line = await reader.readline()
                except (asyncio.LimitOverrunError, ValueError):
                    await self._reply(writer, {"ok": False, "error": "request too long"})
                    break
                if not line:
                    break
                await self._reply(writer, await self._answer(line))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request must be an object with an 'op' string"}
        handler = self.handlers.get(request["op"])
        if handler is None:
            return {"ok": False, "error": f"unknown op {request['op']!r}; known: "
                                          f"{', '.join(sorted(self.handlers))}"}
        try:
            return {"ok": True, **await handler(request)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict) -> None:
        writer.write(json.dumps(_finite(reply), allow_nan=False, default=str).encode() + b"\n")
        await writer.drain()


def _finite(obj):
    """NaN/inf are not JSON: a figure that is not known yet is null."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _answers(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(str(path))
        return True
    except OSError:
        return False


def request(path: Path | str, req: dict, timeout_s: float = 5.0) -> dict:
    """Ask the node at ``path`` (blocking); AdminSocketError when nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        raise AdminSocketError(f"no node answers at {path}: {exc.strerror or exc}") from None
    try:
        return json.loads(buf)
    except ValueError:
        raise AdminSocketError(f"the node at {path} sent a reply that is not JSON") from None
