"""The Ray engine: the generic operations of tsds.engines.local spread over a Ray cluster.

- ``map`` / ``imap``: one Ray task per item (``max_retries``: a task whose worker dies runs again);
- ``map_stateful``: a Ray Data ``map_batches`` over an actor pool (one ``factory()`` per actor, a GPU each
  when the cluster has GPUs); Ray Data restarts a killed actor and retries its item;
- ``map_reduce``: Ray Data read tasks run ``fn`` per item, in order, and one write task runs ``reduce``;
- ``serve``: actors holding the parts (restarted by Ray if killed, rebuilding their part with ``factory``).

Served actors hold CPUs; so that they never starve the other operations' workers on a small cluster, one
set is alive at a time in this process, and every other operation releases it first (it is respawned,
rebuilding its parts, when next used).

The engine also carries the settings of the work run on it (``window_shards``, ``scan_bytes``,
``embedder_factory``) as plain values: the store reads them (tsds.store.embedding).
"""

from __future__ import annotations

import os
import pickle
import threading
from contextlib import contextmanager

import numpy as np

_LIVE: list = []


def release_served() -> None:
    """Kill the served actors alive in this process (they are respawned on their next call)."""
    for backend in list(_LIVE):
        backend.release()


def _call(fn, item):
    return fn(item)


def _apply(batch, fn):
    """A Ray Data batch of pickled items -> their pickled results."""
    return {"out": np.array([pickle.dumps(fn(pickle.loads(b))) for b in batch["item"]], dtype=object)}


class _Stateful:
    """A Ray Data map_batches actor: builds its state once, then yields each item's outputs (pickled)."""

    def __init__(self, factory):
        self.state = factory()

    def __call__(self, batch):
        for blob in batch["item"]:
            for out in self.state(pickle.loads(blob)):
                yield {"out": np.array([pickle.dumps(out)], dtype=object)}


class _Held:
    """A served actor: holds ``factory(items)`` and runs its methods."""

    def __init__(self, factory, items):
        self.obj = factory(items)

    def run(self, method, keys, per_item_args, kwargs):
        fn = getattr(self.obj, method)
        return fn(keys, per_item_args, **kwargs) if per_item_args is not None else fn(keys, **kwargs)

    def pid(self):
        return os.getpid()


def _quiet_data_context():
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ctx


def _reduce_sink(reduce):
    """A Ray Data sink whose one write task runs ``reduce`` on every result, in order."""
    from ray.data import Datasink
    from ray.data.block import BlockAccessor

    class ReduceSink(Datasink):
        def __init__(self):
            self.result = None

        def write(self, blocks, ctx):
            results = []
            for block in blocks:
                results.extend(pickle.loads(b) for b in BlockAccessor.for_block(block).to_arrow()
                               .column("out").to_pylist())
            return reduce(results)

        def on_write_complete(self, result):
            returns = [r for r in getattr(result, "write_returns", result) if r is not None]
            if len(returns) != 1:
                raise RuntimeError(f"expected one write task, got {len(returns)}")
            self.result = returns[0]

        @property
        def supports_distributed_writes(self) -> bool:
            return True

    return ReduceSink()


class _Told:
    """A Ray actor keeping the amounts of work that workers tell, taken by the driver now and then."""

    def __init__(self):
        self.told: list[int] = []

    def add(self, n: int) -> None:
        self.told.append(int(n))

    def take(self) -> list[int]:
        told, self.told = self.told, []
        return told


class _Tell:
    """The picklable ``tell(n)`` that workers call: hands ``n`` to the actor and waits for it, so that a piece
    of work is told before its result can reach the driver."""

    def __init__(self, counter):
        self.counter = counter

    def __call__(self, n: int = 1) -> None:
        import ray

        ray.get(self.counter.add.remote(n))


class RayShards:
    """A served backend: ``factory(part)`` held by Ray actors, the items dealt round-robin over them."""

    def __init__(self, engine: RayEngine, factory, items, keys):
        self.engine = engine
        self.factory = factory
        self.items, self.keys = list(items), list(keys)
        self.n = len(self.items)
        self.groups: list = []

    def _spawn(self) -> None:
        import ray

        release_served()
        n = max(1, min(self.n, self.engine.workers))
        cls = ray.remote(num_cpus=self.engine.actor_cpus, max_restarts=-1, max_task_retries=-1)(_Held)
        for a in range(n):
            positions = list(range(a, self.n, n))
            actor = cls.remote(self.factory, [self.items[p] for p in positions])
            self.groups.append((actor, [self.keys[p] for p in positions], positions))
        _LIVE.append(self)

    def call(self, method: str, per_item_args=None, **kwargs) -> list:
        import ray

        if not self.groups:
            self._spawn()
        kw = ray.put(kwargs)
        refs = []
        for actor, keys, positions in self.groups:
            per = None if per_item_args is None else [per_item_args[p] for p in positions]
            refs.append(actor.run.remote(method, keys, per, kw))
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
    """Runs plain functions on a Ray cluster.

    ``address``: a running cluster ("auto", "ray://host:10001", "host:6379"); None starts a local
    instance (``num_cpus`` CPUs, default all). ``workers``: stateful workers and served actors (default:
    the cluster's GPUs if it has any, else its CPUs); ``actor_cpus``: CPUs each task or actor takes.
    Settings of the work run here, read by the store: ``window_shards`` (shards handed to Ray Data at
    once), ``scan_bytes`` (the byte range a scan task parses; None: the store's default) and
    ``embedder_factory`` (a picklable callable that builds the embedder in a worker).
    """

    name = "ray"
    distributed = True

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
        self.scan_bytes = int(scan_bytes) if scan_bytes else None
        self.timings: dict = {}      # seconds of the last build's phases, for benchmarks

    def map(self, fn, items, *, retries: int = 3) -> list:
        import ray

        release_served()
        task = ray.remote(num_cpus=self.actor_cpus, max_retries=retries)(_call)
        fn_ref = ray.put(fn)
        return ray.get([task.remote(fn_ref, item) for item in items])

    def imap(self, fn, items, *, retries: int = 3):
        """The results in order, each as soon as it is there; tasks still running when the consumer stops
        (an error, say) are cancelled."""
        import ray

        release_served()
        task = ray.remote(num_cpus=self.actor_cpus, max_retries=retries)(_call)
        fn_ref = ray.put(fn)
        refs = [task.remote(fn_ref, item) for item in items]
        finished = False
        try:
            for ref in refs:
                yield ray.get(ref)
            finished = True
        finally:
            if not finished and refs:
                _, running = ray.wait(refs, num_returns=len(refs), timeout=0)
                for r in running:
                    ray.cancel(r)

    def map_stateful(self, factory, items, *, gpu: bool = False):
        import ray.data

        release_served()
        items = list(items)
        if not items:
            return
        _quiet_data_context()
        ds = ray.data.from_items([{"item": pickle.dumps(u)} for u in items], override_num_blocks=len(items))
        resources = {"num_gpus": 1} if gpu and self.gpus else {"num_cpus": self.actor_cpus}
        # Ray Data gives actor-pool workers max_restarts=-1 and max_task_retries=-1 by default
        # (actor_pool_map_operator.py): a killed actor is restarted and its item run again.
        out = ds.map_batches(_Stateful, fn_constructor_args=(factory,), batch_size=1, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=min(self.workers, len(items))), **resources)
        for row in out.iter_rows():
            yield pickle.loads(row["out"])

    def map_reduce(self, fn, items, reduce):
        import ray.data

        release_served()
        items = list(items)
        ctx = _quiet_data_context()
        saved = ctx.execution_options.preserve_order
        ctx.execution_options.preserve_order = True
        try:
            ds = ray.data.from_items([{"item": pickle.dumps(g)} for g in items], override_num_blocks=len(items))
            ds = ds.map_batches(_apply, fn_kwargs={"fn": fn}, batch_size=1, batch_format="numpy",
                                num_cpus=self.actor_cpus)
            sink = _reduce_sink(reduce)
            ds.repartition(1).write_datasink(sink)
        finally:
            ctx.execution_options.preserve_order = saved
        return sink.result

    @contextmanager
    def progress_relay(self, progress, interval: float = 0.5):
        """Yield a picklable ``tell(n)`` for workers: each ``tell(n)`` becomes a ``progress(n)`` in this
        process, from a thread, within ``interval`` seconds, and all of them by the end of the block. Work a
        worker repeats (its item retried after it died) is told again."""
        import ray

        counter = ray.remote(num_cpus=0)(_Told).remote()
        stop = threading.Event()

        def forward() -> None:
            for n in ray.get(counter.take.remote()):
                progress(n)

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    forward()
                except ray.exceptions.RayError:   # the cluster went away: the work itself reports why
                    return

        thread = threading.Thread(target=loop, daemon=True, name="tsds-progress-relay")
        thread.start()
        finished = False
        try:
            yield _Tell(counter)
            finished = True
        finally:
            stop.set()
            thread.join()
            try:
                if finished:
                    forward()
            finally:
                if ray.is_initialized():
                    ray.kill(counter)

    def serve(self, factory, items, keys) -> RayShards:
        """Actors holding ``factory(part)`` (started on first use)."""
        return RayShards(self, factory, items, keys)

    def release(self) -> None:
        release_served()

    def close(self) -> None:
        import ray

        release_served()
        if self._owns and ray.is_initialized():
            ray.shutdown()
        self._owns = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
