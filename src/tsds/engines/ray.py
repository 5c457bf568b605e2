"""The Ray engine: the same pipeline, its per-shard work spread over a Ray cluster.

- Embedding: Ray Data. The driver reads the pool into shards (the readers, bad-row handling and
  resume checks are the pipeline's own), a window of shards becomes a dataset, and ``map_batches``
  runs it through a pool of embedding actors (one model load per actor; a GPU each when the cluster
  has GPUs). The driver writes each returned shard with the pipeline's ``finish`` (atomic files), so
  the store is the same as the local engine's. A killed actor is restarted by Ray and its batch
  retried (``max_restarts`` / ``max_task_retries``); embeddings are deterministic, so the shards are
  byte-identical. A build interrupted as a whole resumes from its finished shards, as locally.
- Index: one FAISS index per group of embedding shards, each built by a Ray task (retried if its
  worker dies) that reads its embedding shards from the store and writes its index shard.
- Search and densities: the shards are held by actors (restarted by Ray if killed, reloading their
  shards from the store); ``ShardedIndex`` fans each call out to them and merges (tsds.retrieval.sharded).
- The solver and the sampling run on the driver: they need only M x K numbers.

The store lives on a file system every node sees (one machine, NFS, a mounted bucket).
"""

from __future__ import annotations

import os

import numpy as np

from tsds.retrieval.sharded import ShardWorker


class _EmbedActor:
    """A Ray Data map_batches actor: loads the embedder once, embeds one shard per call."""

    def __init__(self, factory, identity):
        self.embedder = factory()
        if identity is not None and self.embedder.identity != identity:
            raise RuntimeError(f"embedder on the worker ({self.embedder.identity.get('model')}) differs from "
                               f"the driver's ({identity.get('model')}); install the same model on every node")

    def __call__(self, batch):
        shards, vectors, rows, dims, truncated = [], [], [], [], []
        for i, texts in zip(batch["shard"], batch["texts"]):
            before = self.embedder.truncated
            v = np.ascontiguousarray(self.embedder.embed([str(t) for t in texts]), dtype=np.float32)
            shards.append(int(i))
            vectors.append(v.tobytes())
            rows.append(v.shape[0])
            dims.append(v.shape[1])
            truncated.append(self.embedder.truncated - before)
        return {"shard": np.array(shards, dtype=np.int64), "vectors": np.array(vectors, dtype=object),
                "rows": np.array(rows, dtype=np.int64), "dim": np.array(dims, dtype=np.int64),
                "truncated": np.array(truncated, dtype=np.int64)}


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
    dataset, which bounds the texts held by the driver. ``embedder_factory``: a picklable callable that
    builds the embedder in a worker (default: the store's embedder spec).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, workers: int | None = None,
                 window_shards: int = 128, embedder_factory=None, actor_cpus: float = 1.0):
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

    # ---- embedding -----------------------------------------------------------------------
    def embed_shards(self, jobs, embedder, finish, embedder_spec: str | None = None) -> None:
        factory = self.embedder_factory
        if factory is None:
            if embedder_spec is None:
                raise ValueError("the Ray engine needs the embedder spec (or an embedder_factory) to load it in workers")
            factory = SpecFactory(embedder_spec, "cuda" if self.gpus else None)
        identity = getattr(embedder, "identity", None) if embedder is not None else None
        window = []
        for job in jobs:
            window.append(job)
            if len(window) >= self.window_shards:
                self._embed_window(window, factory, identity, finish)
                window = []
        if window:
            self._embed_window(window, factory, identity, finish)

    def _embed_window(self, window, factory, identity, finish) -> None:
        import ray.data

        release_shard_actors()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        jobs = {i: (batch, digest) for i, batch, digest in window}
        ds = ray.data.from_items([{"shard": i, "texts": list(batch.texts)} for i, batch, _ in window],
                                 override_num_blocks=len(window))
        gpu = {"num_gpus": 1} if self.gpus else {"num_cpus": self.actor_cpus}
        # Ray Data gives actor-pool workers max_restarts=-1 and max_task_retries=-1 by default
        # (actor_pool_map_operator.py): a killed actor is restarted and its batch run again.
        out = ds.map_batches(_EmbedActor, fn_constructor_args=(factory, identity), batch_size=1,
                             batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(window))), **gpu)
        for row in out.iter_rows():
            i = int(row["shard"])
            batch, digest = jobs.pop(i)
            vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(int(row["rows"]), int(row["dim"]))
            finish(i, batch, digest, vectors, int(row["truncated"]))
        if jobs:
            raise RuntimeError(f"Ray Data returned no embeddings for shard(s) {sorted(jobs)}")

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
