"""The local engine: runs the pipeline's per-shard work in this process, in order."""

from __future__ import annotations


class LocalEngine:
    name = "local"

    def embed_shards(self, jobs, embedder, finish) -> None:
        """For each (shard, batch, digest) job: embed the batch's texts and hand the result to ``finish``."""
        for i, batch, digest in jobs:
            before = embedder.truncated
            vectors = embedder.embed(batch.texts)
            finish(i, batch, digest, vectors, embedder.truncated - before)
