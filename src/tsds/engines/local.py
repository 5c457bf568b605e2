"""The local engine: runs plain functions in this process, in order.

Every engine offers the same small set of operations over plain (picklable) functions and items, and knows
nothing of what they do (the store and the pipeline pass their own work in):

- ``map(fn, items)``: ``[fn(item) for item in items]``, as independent tasks (retried where the engine can);
- ``imap(fn, items)``: the same results lazily, in order (a consumer that stops early cancels the rest);
- ``map_stateful(factory, items)``: workers that each build ``state = factory()`` once (say, load a model)
  and yield the outputs of ``state(item)`` for their items; the outputs come in any order;
- ``map_reduce(fn, items, reduce)``: ``reduce([fn(item) for item in items])`` with ``reduce`` run in one task;
- ``serve(factory, items, keys)``: long-lived holders of ``factory(part)`` for parts of ``items``; the
  returned backend's ``call(method, per_item_args, **kwargs)`` runs ``obj.method(keys_of_part, ...)`` on
  each holder and returns one result per item, in item order.

``distributed`` tells whether the work leaves this process; ``workers`` how many items run at once.
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


def read_ahead(items, depth: int = 2):
    """Iterate ``items`` in a background thread, ``depth`` items ahead, so that producing the next item
    (reading and parsing a shard) overlaps the caller's work on this one (embedding it). Errors are
    re-raised here, in order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for job in items:
                while not stop.is_set():
                    try:
                        q.put(job, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, daemon=True, name="tsds-read-ahead")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class LocalServed:
    """``factory(items)`` held in this process; calls run on it directly."""

    def __init__(self, factory, items, keys):
        self.obj = factory(list(items))
        self.keys = list(keys)

    def call(self, method: str, per_item_args=None, **kwargs) -> list:
        fn = getattr(self.obj, method)
        if per_item_args is None:
            return fn(self.keys, **kwargs)
        return fn(self.keys, per_item_args, **kwargs)

    def close(self) -> None:
        pass


class LocalEngine:
    name = "local"
    distributed = False
    workers = 1
    gpus = 0

    def map(self, fn, items, *, retries: int = 0) -> list:
        return [fn(item) for item in items]

    def imap(self, fn, items, *, retries: int = 0):
        return (fn(item) for item in items)

    def map_stateful(self, factory, items, *, gpu: bool = False):
        state = factory()
        for item in items:
            yield from state(item)

    def map_reduce(self, fn, items, reduce):
        return reduce([fn(item) for item in items])

    def serve(self, factory, items, keys) -> LocalServed:
        return LocalServed(factory, items, keys)

    def release(self) -> None:
        """Nothing is held between calls here."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
