"""The Ray engine: the same pipeline, its per-shard work spread over a Ray cluster.

- Reading and embedding: Ray tasks scan the pool files (whole, or byte ranges of plain JSON Lines)
  with the pipeline's readers and report where the good rows are; the driver cuts the shards from
  those locations (tsds.store.shards: the same shards, bad-row errors and counts as reading in order).
  A window of read units (one shard, or every shard of a gzip/Parquet/... file) becomes a dataset, and
  ``map_batches`` runs it through a pool of actors that read their shards and embed them (one model
  load per actor; a GPU each when the cluster has GPUs); finished shards are read and hashed, not
  embedded. The driver parses no text: it checks the hashes of finished shards and writes each new
  one with the pipeline's ``finish`` (atomic files), so the store is the same as the local engine's. A killed actor is restarted by Ray and its batch
  retried (``max_restarts`` / ``max_task_retries``); embeddings are deterministic, so the shards are
  byte-identical. A build interrupted as a whole resumes from its finished shards, as locally.
- Index: one FAISS index per group of embedding shards, each built by a Ray task (retried if its
  worker dies) that reads its embedding shards from the store and writes its index shard.
- Search and densities: the shards are held by actors (restarted by Ray if killed, reloading their
  shards from the store); ``ShardedIndex`` fans each call out to them and merges (tsds.retrieval.sharded).
- The solver and the sampling run on the driver: they need only M x K numbers.
- Selected records: Ray Data read tasks fetch them from the pool files by location (groups of rows),
  and one Ray Data write task writes the records file with the local engine's writer (same bytes).

The store lives on a file system every node sees (one machine, NFS, a mounted bucket).
"""

from __future__ import annotations

import os
import pickle
import time

import numpy as np

from tsds.retrieval.sharded import ShardWorker


class _ReadEmbedActor:
    """A Ray Data map_batches actor: loads the embedder once; per read unit, reads its shards from the
    pool file with the pipeline's readers (tsds.store.shards) and embeds the ones not yet in the store."""

    def __init__(self, factory, identity, spec, on_bad_row, shard_rows, done):
        self.embedder = factory()
        if identity is not None and self.embedder.identity != identity:
            raise RuntimeError(f"embedder on the worker ({self.embedder.identity.get('model')}) differs from "
                               f"the driver's ({identity.get('model')}); install the same model on every node")
        self.spec, self.on_bad_row, self.shard_rows, self.done = spec, on_bad_row, shard_rows, done

    def __call__(self, batch):
        from tsds.errors import InputError
        from tsds.store.pool import texts_sha256
        from tsds.store.provenance import text_hashes
        from tsds.store.shards import read_unit

        for blob in batch["unit"]:
            unit = pickle.loads(blob)
            try:
                for shard in read_unit(unit, self.spec, self.on_bad_row, self.shard_rows):
                    yield self._embed(shard, texts_sha256(shard.texts), text_hashes(shard.texts))
            except InputError as exc:      # reported by the driver, in the reader's words
                yield _row(shard=-1, error=str(exc))

    def _embed(self, shard, digest, hashes):
        v = np.zeros((0, 0), np.float32)
        truncated = 0
        if shard.shard not in self.done:
            before = self.embedder.truncated
            v = np.ascontiguousarray(self.embedder.embed(shard.texts), dtype=np.float32)
            truncated = self.embedder.truncated - before
        return _row(shard=shard.shard, vectors=v.tobytes(), dim=v.shape[1], truncated=truncated, digest=digest,
                    locations=np.asarray(shard.locations, np.int64).tobytes(), file_index=shard.file_index,
                    first_row=shard.first_row, path=shard.path, hashes=hashes.tobytes())


def _row(*, shard, vectors=b"", dim=0, truncated=0, digest="", locations=b"", file_index=-1, first_row=0,
         path="", error="", hashes=b""):
    """One output row of the read-and-embed actor (a batch of one)."""
    return {"shard": np.array([shard], np.int64), "vectors": np.array([vectors], dtype=object),
            "dim": np.array([dim], np.int64), "truncated": np.array([truncated], np.int64),
            "digest": np.array([digest], dtype=object), "locations": np.array([locations], dtype=object),
            "file_index": np.array([file_index], np.int64), "first_row": np.array([first_row], np.int64),
            "path": np.array([path], dtype=object), "error": np.array([error], dtype=object),
            "hashes": np.array([hashes], dtype=object)}


def _fetch_groups(batch):
    """Ray Data read task: the records of each fetch group, read back from the pool file by location
    (a refused record, e.g. a pool file changed since the build, is passed on as its error's line)."""
    from tsds.errors import TsdsError
    from tsds.pipeline.text import fetch_group

    records, errors = [], []
    for g in batch["group"]:
        try:
            records.append(pickle.dumps(fetch_group(pickle.loads(g))))
            errors.append("")
        except TsdsError as exc:
            records.append(pickle.dumps([]))
            errors.append(str(exc))
    return {"records": np.array(records, dtype=object), "error": np.array(errors, dtype=object)}


def _records_sink(path: str, source_field: str, expected: int | None):
    """A Ray Data sink writing every record, in order, to one file (the records file of a selection);
    when a fetch failed it writes nothing and reports the first error."""
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class RecordsFileSink(Datasink):
        def __init__(self):
            self.summary = None

        def write(self, blocks, ctx):
            from tsds.errors import TsdsError
            from tsds.io.writers import records_summary, write_records

            records = []
            for block in blocks:
                table = BlockAccessor.for_block(block).to_arrow()
                for blob, error in zip(table.column("records").to_pylist(), table.column("error").to_pylist()):
                    if error:
                        return {"error": error}
                    records.extend(pickle.loads(blob))
            try:
                rows = write_records(path, records, expected=expected)
            except TsdsError as exc:
                return {"error": str(exc)}
            return records_summary(records, source_field, rows=rows)

        def on_write_complete(self, result):
            returns = [r for r in getattr(result, "write_returns", result) if r is not None]
            if len(returns) != 1:
                raise RuntimeError(f"{path}: expected one write task for the records file, got {len(returns)}")
            self.summary = returns[0]

        @property
        def supports_distributed_writes(self) -> bool:
            return True

    return RecordsFileSink()


class SpecFactory:
    """Builds the embedder named by a spec inside a worker (picklable; nothing but the name travels)."""

    def __init__(self, spec: str, device: str | None = None):
        self.spec, self.device = spec, device

    def __call__(self):
        from tsds.embed import load_embedder

        return load_embedder(self.spec, device=self.device)


class _ShardActorImpl(ShardWorker):
    def run(self, method, shards, per_shard_args, kwargs):
        fn = getattr(self, method)
        return fn(shards, per_shard_args, **kwargs) if per_shard_args is not None else fn(shards, **kwargs)

    def pid(self):
        return os.getpid()


# Shard actors hold CPUs; so that they never starve the embedding actors or another index's actors on a
# small cluster, one set is alive at a time in this process (the others are released and respawned,
# reloading their shards from the store, when next used).
_LIVE: list = []


def release_shard_actors() -> None:
    for backend in _LIVE:
        backend.release()


class RayShards:
    """A ShardedIndex backend whose shards are held by Ray actors (round-robin over the actors)."""

    def __init__(self, engine: RayEngine, specs, metric: str):
        self.engine = engine
        self.specs, self.metric = list(specs), metric
        self.n = len(self.specs)
        self.groups: list = []

    def _spawn(self) -> None:
        import ray

        release_shard_actors()
        n = max(1, min(self.n, self.engine.workers))
        cls = ray.remote(num_cpus=self.engine.actor_cpus, max_restarts=-1, max_task_retries=-1)(_ShardActorImpl)
        for a in range(n):
            positions = list(range(a, self.n, n))
            mine = [self.specs[p] for p in positions]
            self.groups.append((cls.remote(mine, self.metric), [s.shard for s in mine], positions))
        _LIVE.append(self)

    def call(self, method: str, per_shard_args=None, **kwargs) -> list:
        import ray

        if not self.groups:
            self._spawn()
        kw = ray.put(kwargs)
        refs = []
        for actor, shards, positions in self.groups:
            per = None if per_shard_args is None else [per_shard_args[p] for p in positions]
            refs.append(actor.run.remote(method, shards, per, kw))
        out = [None] * self.n
        for (_, _, positions), res in zip(self.groups, ray.get(refs)):
            for p, r in zip(positions, res):
                out[p] = r
        return out

    def actors(self) -> list:
        if not self.groups:
            self._spawn()
        return [a for a, _, _ in self.groups]

    def release(self) -> None:
        """Kill the actors (they are respawned on the next call)."""
        import ray

        if ray.is_initialized():
            for actor, _, _ in self.groups:
                ray.kill(actor)
        self.groups = []
        if self in _LIVE:
            _LIVE.remove(self)

    def close(self) -> None:
        self.release()


class RayEngine:
    """Runs embedding, index building, search and range search on a Ray cluster.

    ``address``: a running cluster ("auto", "ray://host:10001", "host:6379"); None starts a local
    instance (``num_cpus`` CPUs, default all). ``workers``: embedding actors and shard actors (default:
    the cluster's GPUs if it has any, else its CPUs). ``window_shards``: shards handed to Ray Data per
    dataset. ``scan_bytes``: the byte range a scan task parses when planning shards (plain JSON Lines and
    text files; others are scanned whole). ``embedder_factory``: a picklable callable that
    builds the embedder in a worker (default: the store's embedder spec).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, workers: int | None = None,
                 window_shards: int = 128, embedder_factory=None, actor_cpus: float = 1.0,
                 scan_bytes: int | None = None):
        import ray

        self._owns = False
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=num_cpus, **kw)
            self._owns = True
        res = ray.cluster_resources()
        self.gpus = int(res.get("GPU", 0))
        self.cpus = int(res.get("CPU", 1))
        self.workers = int(workers or (self.gpus or self.cpus))
        self.window_shards = int(window_shards)
        self.embedder_factory = embedder_factory
        self.actor_cpus = actor_cpus
        from tsds.store.shards import SCAN_BYTES

        self.scan_bytes = int(scan_bytes or SCAN_BYTES)
        self.timings: dict = {}      # seconds of the last build's shard planning (scan tasks), for benchmarks

    # ---- embedding ----------------------------------------------------------------------
    def embed_shards(self, source, embedder, finish, embedder_spec: str | None = None) -> None:
        """Plan the shards with scan tasks, then read and embed them in Ray Data actors; the driver
        checks finished shards and writes the others with ``finish``. It parses no text itself."""
        factory = self.embedder_factory
        if factory is None:
            if embedder_spec is None:
                raise ValueError("the Ray engine needs the embedder spec (or an embedder_factory) to load it in workers")
            factory = SpecFactory(embedder_spec, "cuda" if self.gpus else None)
        identity = getattr(embedder, "identity", None) if embedder is not None else None
        t = time.perf_counter()
        plans = self.plan_shards(source)
        self.timings["scan_s"] = round(time.perf_counter() - t, 3)
        window, size = [], 0
        for unit in plans:
            window.append(unit)
            size += len(unit.shards)
            if size >= self.window_shards:
                self._embed_window(window, factory, identity, source, finish)
                window, size = [], 0
        if window:
            self._embed_window(window, factory, identity, source, finish)

    def plan_shards(self, source) -> list:
        """The read units of ``source``: scan tasks (one per file, or per byte range of a plain JSON Lines
        or text file) report good-row locations and bad rows; the driver cuts shards from them in order."""
        import ray

        from tsds.store.shards import scan

        release_shard_actors()
        units = source.scan_units(self.scan_bytes)
        task = ray.remote(num_cpus=self.actor_cpus, max_retries=3)(scan)
        spec = ray.put(source.spec)
        refs = [task.remote(u, spec, source.on_bad_row == "fail") for u in units]
        try:
            return source.read_units(units, (ray.get(r) for r in refs))
        except BaseException:        # a bad row or an unreadable file: stop the scans still running
            _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
            for r in running:
                ray.cancel(r)
            raise

    def _embed_window(self, window, factory, identity, source, finish) -> None:
        import ray.data

        from tsds.errors import InputError
        from tsds.store.shards import ShardText

        release_shard_actors()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        expected = {e[0] for unit in window for e in unit.shards}
        ds = ray.data.from_items([{"unit": pickle.dumps(u)} for u in window], override_num_blocks=len(window))
        gpu = {"num_gpus": 1} if self.gpus else {"num_cpus": self.actor_cpus}
        # Ray Data gives actor-pool workers max_restarts=-1 and max_task_retries=-1 by default
        # (actor_pool_map_operator.py): a killed actor is restarted and its unit read and embedded again.
        args = (factory, identity, source.spec, source.on_bad_row, source.shard_rows, source.done)
        out = ds.map_batches(_ReadEmbedActor, fn_constructor_args=args, batch_size=1, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(window))), **gpu)
        for row in out.iter_rows():
            if row["error"]:
                raise InputError(str(row["error"]))
            i = int(row["shard"])
            if i not in expected:       # a unit retried after its actor died may repeat finished shards
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
            raise RuntimeError(f"Ray Data returned no embeddings for shard(s) {sorted(expected)}")

    # ---- selected records ----------------------------------------------------------------
    def write_records(self, path, groups: list[dict], *, source_field: str = "source",
                      expected: int | None = None) -> dict:
        """Fetch the selected records by location and write the records file with Ray Data.

        Read tasks fetch each group with the pool's reader (tsds.pipeline.text.fetch_group, which checks
        each record against the store); one write task receives them in order and writes ``path`` with
        the same writer as the local engine (temporary name, then rename; the rows in the file counted
        and checked against ``expected``), so the file has the same bytes. Returns its summary.
        """
        import ray.data

        from tsds.errors import InputError
        from tsds.io.writers import records_summary, write_records

        if not groups:
            return records_summary([], source_field, rows=write_records(path, [], expected=expected))
        release_shard_actors()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        saved = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            ds = ray.data.from_items([{"group": pickle.dumps(g)} for g in groups], override_num_blocks=len(groups))
            ds = ds.map_batches(_fetch_groups, batch_size=1, batch_format="numpy", num_cpus=self.actor_cpus)
            sink = _records_sink(str(path), source_field, expected)
            ds.repartition(1).write_datasink(sink)
        finally:
            ctx.execution_options.preserve_order = saved
        if "error" in sink.summary:
            raise InputError(sink.summary["error"])
        return sink.summary

    # ---- index ---------------------------------------------------------------------------
    def build_index_shards(self, root: str, jobs, metric: str) -> list[dict]:
        import ray

        from tsds.store.pool import build_index_shard

        release_shard_actors()
        task = ray.remote(num_cpus=self.actor_cpus, max_retries=3)(build_index_shard)
        return ray.get([task.remote(root, spec, metric, first, last) for spec, first, last in jobs])

    def shard_backend(self, specs, metric: str) -> RayShards:
        """Actors serving these index shards (started on first use)."""
        return RayShards(self, specs, metric)

    # ---- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        import ray

        release_shard_actors()
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
