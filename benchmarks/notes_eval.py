"""The hand-written reading of the benchmark's numbers, inserted at the end of docs/results.md."""

NOTES = """
## Reading the numbers

**Decontamination.** `tsds eval` removes from the pool, for every method alike, each row within 0.3 of one
of the task's query or held-out texts, and each row equal to one after normalising whitespace and case.
On the demo pool that removes 57 rows for games (near copies of Debian package descriptions, such as
`0ad` and `0ad-data-common`), 2 for science-quotes, 1 each for computing-networking and zoology, and
none for food. Before that rule the games rows were better than they should have been: at 1%, TSDS
1.753 and knn 1.745 nats/byte, now 1.796 and 1.787. The other tasks moved by less than 0.01.

**TSDS vs the baselines.** TSDS beats random and DSIR in every task x budget cell, by a wide margin
(0.25-0.8 nats/byte). Against knn it is a tie: the two differ by less than 0.01 nats/byte in most cells
(TSDS lower in 9 of 15; the largest gap either way is 0.03). With alpha = 0.5 and C = 1, TSDS's support is only a few hundred candidates
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
with the queries (label share 0.18 vs TSDS 0.43). This follows the method as published but fitted on 20
examples instead of a large target corpus. It is not a faithful picture of DSIR with a real target corpus.

**Draws with replacement (the paper) cost quality.** Drawing 359 times with replacement gives only 63%
distinct examples (near-dup share 0.37), and the loss rises from 1.878 to 2.011 nats/byte, on every task. The
selection is right (label share is even higher, 0.50) but has fewer distinct texts. Draw n distinct
(`--without-replacement`).

**sigma, C, alpha on a clean pool** matter little at 1%: sigma = 0, C = 5 and alpha = 0.9 are all within
0.004 nats/byte of the reference. **sigma matters when the pool has duplicates:** in the robustness
pool (300 texts x 20 copies, half of them near the queries) knn and TSDS with sigma = 0 spend 58% of the
budget on copies and their loss rises to 2.26-2.27 nats/byte, worse than random. TSDS with sigma = 0.3 keeps
the near-duplicate share at 0.13 and its loss at 1.92 (vs 1.88 on the clean pool). This is the paper's
robustness result, measured downstream. DSIR also takes copies (0.17).

**Recommendation from this evidence:** cosine metric, sigma = 0.3 (free on a clean pool, essential with
duplicates), n distinct draws, C = 1 with alpha = 0.5 for budgets up to ~1% of the pool; for larger
budgets lower alpha so that the support holds the budget. This is tsds's default setting for a pool store
(alpha 0.5 lowered automatically, by bisection, until the support holds the budget; `--paper` for the published
defaults). Where the pool is clean and
deduplicated, knn is as good as TSDS at these budgets and cheaper; TSDS's advantage is robustness to
duplicated or templated content.

**Embedder** (from the 2026-11-29 run with `--minilm-store`, before decontamination; not rerun since, as
building the MiniLM store takes ~15 min of CPU). With the MiniLM store of the same pool, TSDS's selection
holds more of the task's label (0.52 vs 0.44 with the static embedder) but its fast-mode loss was slightly
higher (1.904 vs 1.866 nats/byte on that run): MiniLM's neighbours are closer in meaning, the static model's closer in wording, and a
byte n-gram model rewards wording. The static embedder stays the default on CPU (about 200x faster to
embed with); MiniLM is the better choice where a GPU embeds the pool and the model being trained is a
pretrained one, which cares about meaning.

**Neural models (one task, one seed; small differences are within noise).** The tiny transformer trained
from scratch for 150 steps puts all methods within 0.07 nats/byte of each other (knn 3.057, random 3.060,
TSDS 3.065, full 3.074, DSIR 3.130): at that scale the model mostly learns byte statistics that any English
text teaches. SmolLM2-135M-Instruct, last two layers finetuned for 8 steps (4,096 tokens) from a held-out
NLL of 5.195: DSIR 5.019, knn 5.025, TSDS 5.034, random 5.054, full 5.077 nats/token. Every selection helps
and the task-aware ones (DSIR, knn, TSDS) help more than random or the full pool, but 8 steps on one seed
cannot separate them; a real comparison needs a longer recipe and several seeds on a GPU
(`tsds eval --mode model --steps N --seeds 0,1,2`).

**Gradient features** (`--embedder gradients:...`, LESS-style): a first comparison on a 1,000-row sub-pool
is in `docs/results-gradients.md`. There they selected worse than random with both knn and TSDS; what was
and was not run is listed there.

## What is not in these numbers, and why

- The neural-model rows use one task, one budget and one seed: on this 2-core CPU SmolLM2 trains at about
  190 tokens/s, so the full grid (5 tasks x 3 budgets x 3 seeds x 5 methods) would take days.
- Fast-mode losses are per byte for a from-scratch model. They measure how much a selection's text
  resembles the held-out text. They do not measure instruction-following or task accuracy.
"""
