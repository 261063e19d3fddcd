"""Websocket relays on the portal's own origin (daphne + Channels): thin adapters over consoles.services.

- ScreenConsumer: browser (noVNC, subprotocol "binary") <-> the VM's VNC server. The relay answers
  QEMU's password challenge itself and frames the browser's RFB messages (consoles.rfb).
- SerialConsumer: browser (xterm.js) <-> libvirt's console stream of the VM. Binary frames carry
  terminal bytes both ways; text frames carry JSON control messages ({"type": "resize", ...}).

Every refusal or end closes the socket with a code from consoles.exceptions.close_for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from portal.exceptions import PortalError
from portal.net import client_label

from .choices import ConsoleKind, ConsoleTier, SessionRole
from .exceptions import BadFrame, SessionEnded, close_for
from .rfb import ClientStream, HandshakeFailed, ServerHandshake
from .services import (
    END_REASON_WAIT_SECONDS,
    ENDED_MESSAGE,
    ConsoleGrant,
    console_request_scheme,
    console_serial_open,
    console_session_check,
    console_session_close,
    console_session_end_reason,
    console_ticket_redeem,
)

log = logging.getLogger(__name__)

MAX_INPUT_FRAME = 64 * 1024
CONNECT_TIMEOUT = 5.0
HANDSHAKE_TIMEOUT = 10.0
WRITE_BUFFER_HIGH = 4 * 1024 * 1024


def serial_group(vm_id: int) -> str:
    """Channel-layer group of read-only watchers of a VM's serial console."""
    return f"console.serial.{vm_id}"


class _ConsoleConsumer(AsyncWebsocketConsumer):
    kind: str = ""

    async def connect(self) -> None:
        self.grant: ConsoleGrant | None = None
        self.ending = False
        self.tasks: list[asyncio.Task] = []
        self.bytes_to_guest = 0
        self.bytes_from_guest = 0
        protocols = self.scope.get("subprotocols") or []
        # Accept first: a refusal must reach the page as a close code with a reason, not a bare 403.
        await self.accept("binary" if "binary" in protocols else None)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        session = self.scope.get("session")
        user = self.scope.get("user")
        try:
            self.grant = await database_sync_to_async(console_ticket_redeem)(
                token=(query.get("ticket") or [None])[0],
                vm_id=self.scope["url_route"]["kwargs"]["vm_id"],
                kind=self.kind,
                session_key=getattr(session, "session_key", None),
                origin=headers.get("origin"),
                host=headers.get("host"),
                scheme=console_request_scheme(transport_scheme=self.scope.get("scheme"), headers=headers),
                tier=ConsoleTier.CHANNELS,
                user_id=user.pk if user is not None and user.is_authenticated else None,
                client=client_label(peer=self.scope.get("client"), forwarded_for=headers.get("x-forwarded-for")),
            )
        except PortalError as exc:
            await self._refuse(exc)
            return
        except Exception as exc:  # never leave the browser hanging on a bug
            log.exception("console ticket redemption failed")
            await self._refuse(exc)
            return
        try:
            await self.start()
        except Exception as exc:
            if not isinstance(exc, PortalError | OSError | TimeoutError):
                log.exception("console relay failed to start")
            await self.end(exc)
            return
        self.tasks.append(asyncio.create_task(self._poll()))

    async def _refuse(self, exc: BaseException) -> None:
        self.ending = True
        code, reason = close_for(exc)
        await self.close(code=code, reason=reason)

    async def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def stop(self) -> None:
        """Release the guest side (socket, stream); must be idempotent."""

    async def _end_reason(self) -> PortalError:
        """The guest side closed: 4410 once libvirt or the VM row says it stopped, else a plain end."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + END_REASON_WAIT_SECONDS
        while True:
            reason = await database_sync_to_async(console_session_end_reason)(session_id=self.grant.session_id)
            if reason is not None:
                return reason
            if loop.time() >= deadline:
                return SessionEnded(ENDED_MESSAGE)
            await asyncio.sleep(0.25)

    async def _poll(self) -> None:
        interval = max(0.2, float(settings.CONSOLE_POLL_SECONDS))
        while True:
            await asyncio.sleep(interval)
            try:
                await database_sync_to_async(console_session_check)(session_id=self.grant.session_id)
            except PortalError as exc:
                await self.end(exc)
                return
            except Exception:
                log.exception("console session check failed")  # a hiccup is not a reason to cut a session

    async def end(self, exc: BaseException | None, *, code: int | None = None, reason: str = "") -> None:
        """Close the socket with the code for `exc` and record the session's end (once)."""
        if self.ending:
            return
        self.ending = True
        if exc is not None:
            if isinstance(exc, TimeoutError):
                exc = HandshakeFailed("The console is unavailable: the VM's display did not answer in time.")
            elif isinstance(exc, OSError):
                exc = HandshakeFailed("The console is unavailable: could not reach the VM's display.")
            code, reason = close_for(exc)
        await self._cleanup()
        await self.close(code=code or 1000, reason=reason)
        await self._record_close(code or 1000, reason)

    async def _cleanup(self) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        try:
            await self.stop()
        except Exception:
            log.debug("console cleanup failed", exc_info=True)

    async def _record_close(self, code: int | None, reason: str) -> None:
        if self.grant is None:
            return
        try:
            await database_sync_to_async(console_session_close)(
                session_id=self.grant.session_id, code=code, reason=reason,
                bytes_to_guest=self.bytes_to_guest, bytes_from_guest=self.bytes_from_guest)
        except Exception:
            log.exception("could not record the end of console session %s", self.grant.session_id)

    async def disconnect(self, code: int) -> None:
        if self.ending:
            return
        self.ending = True
        await self._cleanup()
        await self._record_close(code, "closed by the browser")


class ScreenConsumer(_ConsoleConsumer):
    """noVNC <-> the VM's VNC server, found in libvirt's live XML by the service."""

    kind = ConsoleKind.SCREEN

    async def start(self) -> None:
        grant = self.grant
        self.writer = None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(grant.target_host, grant.target_port), CONNECT_TIMEOUT)
        self.writer = writer
        # Let a burst from the browser queue up in the transport instead of waiting on every message.
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        sock = writer.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake = ServerHandshake(grant.vnc_password)
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            while not handshake.done:
                data = await reader.read(4096)
                if not data:
                    raise HandshakeFailed("The VM's display closed the connection during the handshake.")
                reply = handshake.feed(data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        self.client_stream = ClientStream(view_only=grant.read_only)
        pending = handshake.leftover
        await self.send(bytes_data=self.client_stream.greeting())
        self.tasks.append(asyncio.create_task(self._pump(reader, pending)))

    async def _pump(self, reader: asyncio.StreamReader, pending: bytes) -> None:
        """Guest -> browser, unchanged."""
        try:
            if pending:
                await self.send(bytes_data=pending)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                self.bytes_from_guest += len(data)
                await self.send(bytes_data=data)
        except (ConnectionError, OSError):
            pass
        await self.end(await self._end_reason())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ending or self.grant is None:
            return
        if bytes_data is None:
            await self.end(BadFrame("Bad frame: the screen console takes binary RFB frames only."))
            return
        try:
            to_server, to_client = self.client_stream.feed(bytes_data)
        except BadFrame as exc:
            await self.end(exc)
            return
        if to_client:
            await self.send(bytes_data=to_client)
        if to_server:
            self.bytes_to_guest += len(to_server)
            try:
                self.writer.write(to_server)
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass  # the pump sees the end and reports why

    async def stop(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            self.writer = None
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, TimeoutError):
                pass


class SerialConsumer(_ConsoleConsumer):
    """xterm.js <-> libvirt's serial console stream; a second viewer watches read-only or is refused."""

    kind = ConsoleKind.SERIAL

    async def start(self) -> None:
        grant = self.grant
        self.stream = None
        self.stop_reading = threading.Event()
        self.group = serial_group(grant.vm_id)
        if grant.role == SessionRole.CONTROL:
            self.stream = await database_sync_to_async(console_serial_open)(session_id=grant.session_id)
            queue: asyncio.Queue = asyncio.Queue()
            loop = asyncio.get_running_loop()
            threading.Thread(target=self._read_stream, args=(self.stream, loop, queue),
                             name=f"serial-{grant.session_id}", daemon=True).start()
            self.tasks.append(asyncio.create_task(self._pump(queue)))
            message = f"Connected to the serial console of {grant.vm_name}."
        else:
            await self.channel_layer.group_add(self.group, self.channel_name)
            message = (f"Watching the serial console of {grant.vm_name} read-only: "
                       "someone else is typing; your keys are not sent.")
        await self.send(text_data=json.dumps({"type": "status", "role": grant.role, "read_only": grant.read_only,
                                              "message": message}))

    def _read_stream(self, stream, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        """A thread per session: libvirt's non-blocking stream, handed to the event loop chunk by chunk."""
        while not self.stop_reading.is_set():
            data = stream.read(timeout=0.5)
            if data is None:
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            if data:
                loop.call_soon_threadsafe(queue.put_nowait, data)

    async def _pump(self, queue: asyncio.Queue) -> None:
        while True:
            data = await queue.get()
            if data is None:
                break
            self.bytes_from_guest += len(data)
            await self.send(bytes_data=data)
            await self.channel_layer.group_send(self.group, {"type": "serial.output", "data": data})
        await self.end(await self._end_reason())

    async def serial_output(self, message: dict) -> None:
        """Output of the controlling session, for read-only watchers."""
        if not self.ending and self.grant is not None and self.grant.role == SessionRole.WATCH:
            await self.send(bytes_data=message["data"])

    async def serial_ended(self, message: dict) -> None:
        if self.grant is not None and self.grant.role == SessionRole.WATCH:
            await self.end(SessionEnded(message.get("reason") or "The controlling terminal closed."))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ending or self.grant is None:
            return
        if text_data is not None:
            await self._control(text_data)
            return
        if len(bytes_data) > MAX_INPUT_FRAME:
            await self.end(BadFrame("Bad frame: terminal input frames are limited to 64 KiB."))
            return
        if self.grant.read_only or self.stream is None:
            return  # watchers' keys go nowhere
        self.bytes_to_guest += len(bytes_data)
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.stream.write, bytes_data)
        except PortalError as exc:
            await self.end(exc)

    async def _control(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            await self.end(BadFrame("Bad frame: control messages are JSON objects."))
            return
        if not isinstance(message, dict):
            await self.end(BadFrame("Bad frame: control messages are JSON objects."))
            return
        if message.get("type") == "resize":
            cols, rows = message.get("cols"), message.get("rows")
            if not (isinstance(cols, int) and isinstance(rows, int) and 1 <= cols <= 1000 and 1 <= rows <= 1000):
                await self.end(BadFrame("Bad frame: resize needs integer cols and rows between 1 and 1000."))
                return
            # A serial line carries no window size; the page offers to type `stty` for the user instead.
            self.size = (cols, rows)
            await self.send(text_data=json.dumps({"type": "resized", "cols": cols, "rows": rows}))
            return
        if message.get("type") == "ping":
            await self.send(text_data=json.dumps({"type": "pong"}))
            return
        await self.end(BadFrame(f"Bad frame: unknown control message {str(message.get('type'))[:30]!r}."))

    async def stop(self) -> None:
        stop = getattr(self, "stop_reading", None)
        if stop is not None:
            stop.set()
        grant = self.grant
        if grant is None:
            return
        if grant.role == SessionRole.WATCH:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            return
        stream, self.stream = getattr(self, "stream", None), None
        if stream is not None:
            await asyncio.get_running_loop().run_in_executor(None, stream.close)
        if hasattr(self, "group"):
            await self.channel_layer.group_send(self.group, {"type": "serial.ended",
                                                             "reason": "The controlling terminal closed."})
