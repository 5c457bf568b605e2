"""The local engine: runs the pipeline's per-shard work in this process, in order.

An engine is an adapter with the operations the pipeline needs; the pipeline itself (tsds.store,
tsds.pipeline) is the same for every engine:

- ``embed_shards(jobs, embedder, finish, embedder_spec=...)``: embed each (shard, batch, digest) job and
  hand (shard, batch, digest, vectors, truncated) to ``finish``, which writes the shard;
- ``build_index_shards(root, jobs, metric)``: build each (ShardSpec, first, last) index shard from the
  store's embedding shards [first, last);
- ``shard_backend(specs, metric)``: what serves a ShardedIndex's shards (search, range search);
- ``workers``: how many shards it works on at once (the default number of index shards).
"""

from __future__ import annotations


class LocalEngine:
    name = "local"
    workers = 1

    def embed_shards(self, jobs, embedder, finish, **_) -> None:
        """For each (shard, batch, digest) job: embed the batch's texts and hand the result to ``finish``."""
        for i, batch, digest in jobs:
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
