"""A build's shards read and embedded on an engine: here, in order, one shard read ahead; or, on a
distributed engine, planned by scan tasks and read and embedded by stateful workers.

Distributed: scan tasks parse the pool files (whole, or byte ranges of plain JSON Lines and text) with
the readers and report where the good rows are; the driver cuts the shards from those locations
(tsds.store.shards: the same shards, bad-row errors and counts as reading in order). A window of read
units becomes one ``map_stateful`` call whose workers load the embedder once, read their units' shards
and embed the ones not yet in the store (finished shards are read and hashed, not embedded). The
driver parses no text: it checks the hashes of finished shards and hands each new one to ``finish``,
which writes it (atomic files), so the store is the same as a local build's. Embeddings are
deterministic, so a retried unit gives byte-identical shards.
"""

from __future__ import annotations

import time
from contextlib import closing, nullcontext
from functools import partial

import numpy as np

from tsds.embed.base import embeds_with_progress
from tsds.engines import read_ahead
from tsds.errors import InputError
from tsds.store.provenance import text_hashes, texts_sha256
from tsds.store.shards import SCAN_BYTES, ShardText, read_unit, scan


class SpecFactory:
    """Builds the embedder named by a spec inside a worker (picklable; nothing but the name travels)."""

    def __init__(self, spec: str, device: str | None = None):
        self.spec, self.device = spec, device

    def __call__(self):
        from tsds.embed import load_embedder

        return load_embedder(self.spec, device=self.device)


class ReadEmbed:
    """A worker's state: the embedder, loaded once; per read unit, its shards read from the pool file with
    the readers (tsds.store.shards) and those not yet in the store embedded. Yields one row per shard.
    ``tell(n)``, if given, hears of the rows embedded, per batch where the embedder says so, else per shard."""

    def __init__(self, factory, identity, spec, on_bad_row, shard_rows, done, tell=None):
        self.embedder = factory()
        if identity is not None and self.embedder.identity != identity:
            raise RuntimeError(f"embedder on the worker ({self.embedder.identity.get('model')}) differs from "
                               f"the driver's ({identity.get('model')}); install the same model on every node")
        self.spec, self.on_bad_row, self.shard_rows, self.done = spec, on_bad_row, shard_rows, done
        self.tell, self.per_batch = tell, tell is not None and embeds_with_progress(self.embedder)

    def __call__(self, unit):
        try:
            for shard in read_unit(unit, self.spec, self.on_bad_row, self.shard_rows):
                yield self._embed(shard)
        except InputError as exc:      # reported by the driver, in the reader's words
            yield {"shard": -1, "error": str(exc)}

    def _embed(self, shard) -> dict:
        v = np.zeros((0, 0), np.float32)
        truncated = 0
        if shard.shard not in self.done:
            before = self.embedder.truncated
            v = np.ascontiguousarray(self.embedder.embed(shard.texts, **({"progress": self.tell} if self.per_batch
                                                                         else {})), dtype=np.float32)
            truncated = self.embedder.truncated - before
            if self.tell is not None and not self.per_batch:
                self.tell(len(shard.texts))
        return {"shard": shard.shard, "vectors": v.tobytes(), "dim": v.shape[1], "truncated": truncated,
                "digest": texts_sha256(shard.texts), "locations": np.asarray(shard.locations, np.int64).tobytes(),
                "file_index": shard.file_index, "first_row": shard.first_row, "path": shard.path,
                "hashes": text_hashes(shard.texts).tobytes(), "error": ""}


def embed_shards(engine, source, embedder, finish, embedder_spec: str | None = None, progress=None) -> None:
    """Embed the shards of ``source`` (tsds.store.shards.PoolShards) on ``engine`` and hand each new one,
    (shard, rows, digest, vectors, truncated), to ``finish``. ``progress(n)``: called per embedded batch (in
    this process: give it only when `embeds_with_progress` says the embedder takes it; on a distributed
    engine: only one with a ``progress_relay``, through which the workers tell it)."""
    if not engine.distributed:
        per_batch = {} if progress is None else {"progress": progress}
        for i, batch, digest in read_ahead(source.jobs()):
            before = embedder.truncated
            vectors = embedder.embed(batch.texts, **per_batch)
            finish(i, batch, digest, vectors, embedder.truncated - before)
        return
    factory = getattr(engine, "embedder_factory", None)
    if factory is None:
        if embedder_spec is None:
            raise ValueError("a distributed engine needs the embedder spec (or an embedder_factory) to load it "
                             "in workers")
        factory = SpecFactory(embedder_spec, "cuda" if engine.gpus else None)
    identity = getattr(embedder, "identity", None) if embedder is not None else None
    t = time.perf_counter()
    plans = plan_shards(engine, source)
    if hasattr(engine, "timings"):
        engine.timings["scan_s"] = round(time.perf_counter() - t, 3)
    with nullcontext() if progress is None else engine.progress_relay(progress) as tell:
        worker = partial(ReadEmbed, factory, identity, source.spec, source.on_bad_row, source.shard_rows,
                         source.done, tell)
        window, size = [], 0
        for unit in plans:
            window.append(unit)
            size += len(unit.shards)
            if size >= getattr(engine, "window_shards", 128):
                _embed_window(engine, window, worker, source, finish)
                window, size = [], 0
        if window:
            _embed_window(engine, window, worker, source, finish)


def plan_shards(engine, source) -> list:
    """The read units of ``source``: scan tasks (one per file, or per byte range of a plain JSON Lines or
    text file) report good-row locations and bad rows; the driver cuts shards from them in order (a bad
    row or an unreadable file stops the scans still running)."""
    units = source.scan_units(getattr(engine, "scan_bytes", None) or SCAN_BYTES)
    task = partial(scan, spec=source.spec, fail=source.on_bad_row == "fail")
    with closing(engine.imap(task, units)) as results:
        return source.read_units(units, results)


def _embed_window(engine, window, worker, source, finish) -> None:
    expected = {e[0] for unit in window for e in unit.shards}
    for row in engine.map_stateful(worker, window, gpu=True):
        if row["error"]:
            raise InputError(str(row["error"]))
        i = int(row["shard"])
        if i not in expected:       # a unit retried after its worker died may repeat finished shards
            continue
        expected.discard(i)
        locations = np.frombuffer(row["locations"], dtype=np.int64).tolist()
        digest = str(row["digest"])
        if source.seen(i, len(locations), digest, str(row["path"])):
            continue
        shard = ShardText(i, int(row["file_index"]), str(row["path"]), int(row["first_row"]), [], locations)
        shard.text_hashes = np.frombuffer(row["hashes"], dtype=np.uint64).copy()   # the texts stay on the worker
        vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(locations), int(row["dim"]))
        finish(i, shard, digest, vectors, int(row["truncated"]))
    if expected:
        raise RuntimeError(f"the engine returned no embeddings for shard(s) {sorted(expected)}")
