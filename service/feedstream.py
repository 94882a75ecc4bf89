"""The change feed as Server-Sent Events.

``Feed.follow`` blocks (on PostgreSQL it waits for the feed writers' NOTIFY), so each
subscriber gets a thread of its own that follows the feed and hands entries to the event
loop through a bounded queue: a slow client holds back only its own thread, and a client
that goes away stops it within a second (PostgreSQL: the follower's wait for a NOTIFY).
Each entry is one SSE event whose ``id`` is its position, so a client that reconnects
with ``Last-Event-ID`` resumes right after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import AsyncIterator, Callable, Collection

from projections.feed import Feed, FeedEntry

QUEUE = 256
#: Seconds between two checks that the key of an open stream is still active.
KEY_CHECK_SECONDS = 5.0
BATCH = 200
RETRY_MS = 1000


class Ended:
    """The follower stopped: the feed could not be read (the client will reconnect)."""

    def __init__(self, error: BaseException | None):
        self.error = error


def encode(entry: FeedEntry) -> bytes:
    data = json.dumps(entry.as_dict(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {entry.position}\ndata: {data}\n\n".encode()


async def sse_events(
    feed: Feed,
    after: int,
    kinds: Collection[str] | None,
    customer_id: str | None,
    *,
    keepalive_seconds: float,
    poll_seconds: float,
    allowed: Callable[[], bool],
) -> AsyncIterator[bytes]:
    """The bytes of an SSE response: every entry after ``after``, then each new one, with a
    keep-alive comment whenever nothing was sent for ``keepalive_seconds``. Every
    ``KEY_CHECK_SECONDS`` it asks ``allowed`` whether the caller's key still may read,
    and ends the stream when not: a stream never ends by itself, so a key revoked after
    it opened kept receiving every customer's changes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[FeedEntry | Ended] = asyncio.Queue(maxsize=QUEUE)
    stop = threading.Event()

    def hand_over(item: FeedEntry | Ended) -> bool:
        try:
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        except RuntimeError:  # the event loop is gone: the server is stopping
            return False
        while True:
            try:
                future.result(timeout=0.5)
                return True
            except concurrent.futures.TimeoutError:
                if stop.is_set():
                    future.cancel()
                    return False

    def follow() -> None:
        error: BaseException | None = None
        try:
            entries = feed.follow(
                after, kinds=kinds, customer_id=customer_id, stop=stop, poll_seconds=poll_seconds
            )
            for entry in entries:
                if not hand_over(entry):
                    return
        except Exception as exc:  # a lost database: end the stream, the client reconnects
            error = exc
        if not stop.is_set():
            hand_over(Ended(error))

    thread = threading.Thread(target=follow, name=f"feed-after-{after}", daemon=True)
    thread.start()
    try:
        yield f"retry: {RETRY_MS}\n: journey feed after position {after}\n\n".encode()
        sent = checked = loop.time()
        while True:
            if loop.time() - checked >= KEY_CHECK_SECONDS:
                if not await asyncio.to_thread(allowed):
                    yield b": the key is revoked or lacks feed:read now; the stream ends\n\n"
                    return
                checked = loop.time()
            until = min(sent + keepalive_seconds, checked + KEY_CHECK_SECONDS)
            try:
                item = await asyncio.wait_for(queue.get(), max(until - loop.time(), 0.0))
            except TimeoutError:
                if loop.time() - sent >= keepalive_seconds:
                    yield b": keep-alive\n\n"
                    sent = loop.time()
                continue
            sent = loop.time()
            chunk = []
            while True:
                if isinstance(item, Ended):
                    if chunk:
                        yield b"".join(chunk)
                    reason = f"{type(item.error).__name__}" if item.error else "stopped"
                    yield f": feed unavailable ({reason}); reconnect\n\n".encode()
                    return
                chunk.append(encode(item))
                if len(chunk) >= BATCH or queue.empty():
                    break
                item = queue.get_nowait()
            yield b"".join(chunk)
    finally:
        stop.set()
