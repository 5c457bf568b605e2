"""The hand-written reading of the benchmark's numbers, inserted at the end of docs/results.md."""

NOTES = """
## Reading the numbers

**TSDS vs the baselines.** TSDS beats random and DSIR in every task x budget cell, by a wide margin
(0.25-0.8 nats/byte). Against knn it is a tie: the two differ by less than 0.01 nats/byte in most cells
(TSDS lower in 9 of 15). With alpha = 0.5 and C = 1, TSDS's support is only a few hundred candidates
around the queries, so its selection is close to knn's nearest-neighbour set; at 5% the support is
too small for 1,795 distinct draws and the harness halves alpha until it is large enough
(alpha 0.125, or 0.0625 for one task; `alpha_used` in eval.json), which gives essentially knn's set.
**Where TSDS loses:** the full pool has a lower loss than every 0.5% and 1% selection on zoology, games and
science-quotes. The full pool holds ~100x more text than a 0.5% selection, and a from-scratch byte n-gram
model gains more from extra text about general spelling and morphology than from closeness to the task.
At 5%, TSDS and knn beat the full pool on four of five tasks (science-quotes is the exception).
This is where the fast mode differs from finetuning a pretrained model, which already knows the
general language and mostly needs the task's distribution.

**DSIR** is the weakest method here, worse than random. Its importance weights come from 20 short query
texts: most n-gram buckets have zero target mass, so every n-gram that is not in the queries costs about
-17 nats of log weight. The weights therefore favour very short texts that happen to share a few words
with the queries (label share 0.18 vs TSDS 0.44). This follows the method as published but fitted on 20
examples instead of a large target corpus. It is not a faithful picture of DSIR with a real target corpus.

**Draws with replacement (the paper) cost quality.** Drawing 359 times with replacement gives only 62%
distinct examples (near-dup share 0.38), and the loss rises from 1.866 to 2.005 nats/byte, on every task. The
selection is right (label share is even higher, 0.51) but has fewer distinct texts. Draw n distinct
(`--without-replacement`).

**sigma, C, alpha on a clean pool** matter little at 1%: sigma = 0, C = 5 and alpha = 0.9 are all within
0.005 nats/byte of the reference. **sigma matters when the pool has duplicates:** in the robustness
pool (300 texts x 20 copies, half of them near the queries) knn and TSDS with sigma = 0 spend 58% of the
budget on copies and their loss rises to 2.25-2.27 nats/byte, worse than random. TSDS with sigma = 0.3 keeps
the near-duplicate share at 0.13 and its loss at 1.91 (vs 1.87 on the clean pool). This is the paper's
robustness result, measured downstream. DSIR also takes copies (0.17).

**Recommendation from this evidence:** cosine metric, sigma = 0.3 (free on a clean pool, essential with
duplicates), n distinct draws, C = 1 with alpha = 0.5 for budgets up to ~1% of the pool; for larger
budgets lower alpha (or `--alpha auto`) so that the support holds the budget. Where the pool is clean and
deduplicated, knn is as good as TSDS at these budgets and cheaper; TSDS's advantage is robustness to
duplicated or templated content.

## What is not in these numbers, and why

- **Embedder (static vs MiniLM).** Embedding the 35,894-text pool with MiniLM is ~12 min of one core on
  an idle machine. On the shared development machine a build ran for 17 minutes without finishing one
  8,192-row shard, and it was stopped. The suite runs the variant when given a MiniLM store of the pool
  (`--minilm-store DIR`, built with `tsds pool build data/demo/pool.jsonl.gz --embedder minilm --out DIR`).
- **Neural models.** The tiny-transformer stage (`--tiny`) and the SmolLM2 stage (`--model`, last 2 layers,
  8 steps x 4 x 128 tokens, 60 held-out texts) are implemented and wired in, but were not part of this
  run: on the shared machine the tiny transformer trained at ~5k tokens/s and SmolLM2 took 127 s just to
  load, so they did not fit the time available. `tsds eval --mode tiny|model` runs either on one task.
- Fast-mode losses are per byte for a from-scratch model. They measure how much a selection's text
  resembles the held-out text. They do not measure instruction-following or task accuracy.
"""
