"""One generation at a time on the server's model, the others waiting in arrival order, a bounded number.

A model has one KV cache, so generations run one after another on one worker thread (FIFO: first come,
first served). Each job streams its runtime events back to the event loop through an asyncio queue; its
`cancel` event, set when the client goes away, ends it between tokens (or between prefill runs), and a job
whose client left while it waited never starts.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from edgelm.serve.limits import MAX_QUEUE
from edgelm.serve.openai_api import ApiError

END = object()  # the last item a job puts on its queue


class Scheduler:
    def __init__(self, model, max_waiting: int = MAX_QUEUE):
        self.model = model
        self.max_waiting = max_waiting
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edgelm-generate")
        self._lock = threading.Lock()
        self.waiting = 0
        self.running = 0
        self.closing = False
        self._current: threading.Event | None = None  # the running job's cancel event
        self._cache_owner = None  # the conversation whose tokens the model's KV cache holds (None: nobody's)

    def state(self) -> dict:
        return {"running": self.running, "waiting": self.waiting, "max_waiting": self.max_waiting}

    def submit(self, req, cancel: threading.Event, conversation=None) -> asyncio.Queue:
        """Queue a generation; its events (runtime Deltas, then an exception if it failed, then END) arrive on
        the returned queue. ApiError 429 when `max_waiting` requests already wait, 503 when shutting down.
        `conversation`: a key; the job reuses the KV cache only if the job before it had the same key (None
        never reuses)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if self.closing:
                raise ApiError(503, "the server is shutting down", code="shutting_down")
            if self.waiting >= self.max_waiting:
                raise ApiError(429, f"{self.waiting} requests are already waiting for the model (the limit, "
                               "--max-queue); retry later", code="queue_full")
            self.waiting += 1
        self._pool.submit(self._job, req, cancel, loop, queue, conversation)
        return queue

    def _job(self, req, cancel: threading.Event, loop, queue: asyncio.Queue, conversation) -> None:
        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
                cancel.set()

        with self._lock:
            self.waiting -= 1
            self.running += 1
            self._current = cancel
        try:
            if not cancel.is_set() and not self.closing:
                reuse = conversation is not None and conversation == self._cache_owner
                self._cache_owner = conversation  # from the first token on, the cache holds this one's tokens
                for event in self.model.run(req, cancel=cancel, reuse_cache=reuse):
                    put(event)
        except Exception as exc:  # reported to the request that caused it; the server goes on
            put(exc)
        finally:
            with self._lock:
                self.running -= 1
            put(END)

    def close(self) -> None:
        """Refuse new requests, end the queued ones, wait for the running one to stop."""
        self.closing = True
        if self._current is not None:
            self._current.set()
        self._pool.shutdown(wait=True)
