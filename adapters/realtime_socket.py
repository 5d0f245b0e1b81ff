"""The WebSocket side of `/v1/realtime?intent=transcription`: one RealtimeSession per
connection, its client events read in order (a turn detector's audio steps in a worker thread),
each committed turn transcribed concurrently through the server's batcher (begun early when a
silence looks like the turn's end: when it is, the transcript is ready sooner), every refusal an
`error` event (the session goes on), and the server's limits: sessions at once, session length,
idle time, event size."""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from svlora.adapters.realtime import (MAX_EVENT_BYTES, ClientError, RealtimeSession, Turn,
                                      error_event, new_id)

# WebSocket close codes (RFC 6455 §7.4.1)
POLICY_VIOLATION, TRY_AGAIN_LATER, NORMAL = 1008, 1013, 1000


@dataclass
class RealtimeLimits:
    max_connections: int
    max_session_seconds: float
    idle_seconds: float


class Connections:
    """How many realtime sessions are open (the event loop's thread only)."""

    def __init__(self, limit: int):
        self.limit, self.open = limit, 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


async def run_session(websocket: WebSocket, intent: str | None, make_session, transcribe,
                      limits: RealtimeLimits, connections: Connections) -> None:
    """Serve one connection until the client leaves or a limit closes it. `make_session()` gives
    its RealtimeSession; `transcribe(turn)` the turn's result (raises with the reason)."""
    await websocket.accept()
    send_lock = asyncio.Lock()

    async def send(event: dict) -> None:
        async with send_lock:
            await websocket.send_text(json.dumps(event, ensure_ascii=False))

    async def refuse(code: str, message: str, close_code: int) -> None:
        await send(error_event(ClientError(code, message)))
        await websocket.close(close_code)

    if intent != "transcription":
        return await refuse("invalid_intent", f"intent {str(intent)[:40]!r}: this server offers "
                            "/v1/realtime?intent=transcription only", POLICY_VIOLATION)
    if not connections.take():
        return await refuse("too_many_sessions", f"{connections.limit} realtime sessions are open (the "
                            "server's --realtime-max-connections); retry later", TRY_AGAIN_LATER)
    session: RealtimeSession = make_session()
    turns: set[asyncio.Task] = set()
    ahead: dict[str, tuple[tuple[int, int], asyncio.Task]] = {}  # item → (span, its speculative decoding)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.max_session_seconds
    try:
        await send(session.created())
        while True:
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(websocket.receive(), min(limits.idle_seconds, max(left, 0)))
            except asyncio.TimeoutError:
                expired = loop.time() >= deadline
                reason = (f"the session reached --realtime-max-session-seconds "
                          f"{limits.max_session_seconds:g}; open a new one" if expired else
                          f"no client event for {limits.idle_seconds:g} s (--realtime-idle-seconds)")
                await asyncio.gather(*turns, return_exceptions=True)  # finish what was committed
                return await refuse("session_expired" if expired else "idle_timeout", reason, NORMAL)
            if message["type"] == "websocket.disconnect":
                return
            await handle_message(message, session, send, transcribe, turns, ahead)
    except WebSocketDisconnect:
        return
    finally:
        connections.give_back()
        for task in [*turns, *(task for _, task in ahead.values())]:
            task.cancel()


async def handle_message(message: dict, session: RealtimeSession, send, transcribe,
                         turns: set[asyncio.Task], ahead: dict) -> None:
    text = message.get("text")
    if text is None:
        return await send(error_event(ClientError("invalid_event", "binary frames are not events: send "
                                                  "JSON text (audio as base64 in input_audio_buffer.append)")))
    if len(text) > MAX_EVENT_BYTES:
        return await send(error_event(ClientError("event_too_large", f"an event of {len(text)} bytes; at "
                                                  f"most {MAX_EVENT_BYTES} (send audio in smaller chunks)")))
    try:
        event = json.loads(text)
    except ValueError as error:
        return await send(error_event(ClientError("invalid_json", f"not JSON: {error}")))
    if not isinstance(event, dict):
        return await send(error_event(ClientError("invalid_event", "an event is a JSON object with a `type`")))
    try:
        events, committed = await asyncio.to_thread(session.handle, event)
    except ClientError as error:
        client_id = event.get("event_id")
        return await send(error_event(error, client_id if isinstance(client_id, str) else None))
    for server_event in events:
        await send(server_event)
    speculative, abandoned = session.take_speculation()
    for item in abandoned:  # speech came back: that decoding is void (skipped if not started)
        if item in ahead:
            ahead.pop(item)[1].cancel()
    for turn in speculative:  # a silence long enough to be the end: decode now, confirm later
        ahead[turn.item_id] = (turn.span, asyncio.create_task(transcribe(turn)))
    for turn in committed:
        early = ahead.pop(turn.item_id, None)
        if early is not None and early[0] != turn.span:
            early[1].cancel()
            early = None
        decoding = early[1] if early is not None else asyncio.create_task(transcribe(turn))
        task = asyncio.create_task(answer_turn(turn, send, decoding))
        turns.add(task)
        task.add_done_callback(turns.discard)


async def answer_turn(turn: Turn, send, decoding: asyncio.Task) -> None:
    """The turn's delta (its whole transcript) and completed events once `decoding` (begun
    when the turn was committed, or earlier on speculation) gives them, or a failed event."""
    try:
        completed = await decoding
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 — the client hears why; the session goes on
        reason = getattr(error, "detail", None) or f"{type(error).__name__}: {error}"
        with suppress(RuntimeError, WebSocketDisconnect):  # the client may have left meanwhile
            await send({"type": "conversation.item.input_audio_transcription.failed",
                           "event_id": new_id("event"), "item_id": turn.item_id, "content_index": 0,
                           "error": {"type": "transcription_error", "message": str(reason)}})
        return
    with suppress(RuntimeError, WebSocketDisconnect):
        await send({"type": "conversation.item.input_audio_transcription.delta", "event_id": new_id("event"),
                    "item_id": turn.item_id, "content_index": 0, "delta": completed["transcript"]})
        await send(completed)
