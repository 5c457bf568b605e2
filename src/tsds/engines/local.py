"""The local engine: runs the pipeline's per-shard work in this process, in order.

An engine is an adapter with the operations the pipeline needs; the pipeline itself (tsds.store,
tsds.pipeline) is the same for every engine:

- ``embed_shards(source, embedder, finish, embedder_spec=...)``: embed the pool's shards
  (tsds.store.shards.PoolShards: read here in order with ``source.jobs()``, or planned and read by
  workers) and hand (shard, rows, digest, vectors, truncated) to ``finish``, which writes the shard;
- ``build_index_shards(root, jobs, metric)``: build each (ShardSpec, first, last) index shard from the
  store's embedding shards [first, last);
- ``shard_backend(specs, metric)``: what serves a ShardedIndex's shards (search, range search);
- ``workers``: how many shards it works on at once (the default number of index shards).
"""

from __future__ import annotations

import queue
import threading

_DONE = object()


def _prefetch(jobs, depth: int = 2):
    """Iterate ``jobs`` in a background thread, ``depth`` items ahead, so that reading and parsing the
    next shard overlaps embedding this one (the tokenizer and BLAS release the GIL). Errors are re-raised
    here, in order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for job in jobs:
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


class LocalEngine:
    name = "local"
    workers = 1

    def embed_shards(self, source, embedder, finish, **_) -> None:
        """Read the shards here, in order (one read ahead), embed each and hand the result to ``finish``."""
        for i, batch, digest in _prefetch(source.jobs()):
            before = embedder.truncated
            vectors = embedder.embed(batch.texts)
            finish(i, batch, digest, vectors, embedder.truncated - before)

    def build_index_shards(self, root: str, jobs, metric: str) -> list[dict]:
        from tsds.store.pool import build_index_shard

        return [build_index_shard(root, spec, metric, first, last) for spec, first, last in jobs]

    def shard_backend(self, specs, metric: str):
        from tsds.retrieval.sharded import LocalShards

        return LocalShards(specs, metric)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
