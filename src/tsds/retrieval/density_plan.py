"""Which way each chunk of density points is computed over an IVF-Flat index: pruned or brute force.

The pruned path (tsds.retrieval.density) multiplies only the (point, member) pairs that no bound rules
out: the lists the shell bound keeps are sieved in a (p + 1)-dimensional projection, and only the pairs
the sieve keeps are multiplied in full. When the bounds prune little (real text embeddings, a wide
sigma), the sieve is work on top of the product it was meant to avoid, and multiplying every list
against every point of the chunk is cheaper. Both paths sum the same kernel terms over the same lists
in the same order; the brute-force path multiplies the lists' full blocks instead of sieved sub-blocks.

The choice is made per chunk, after the (cheap) list bound, from counted work only, never from timings,
so a run is reproducible: the bound gives the pairs to sieve, and the fraction of sieved pairs that the
sieve keeps is measured on the chunks computed so far with this index and sigma (it is kept on the
index, so every round of one selection shares it). Until a fraction has been measured, chunks take the
pruned path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PATHS = ("auto", "pruned", "brute")

# Cost per pair, in multiply-adds: a full product costs the dimension, the kernel's element-wise passes
# (subtract, scale, clip, sum, count) about _ELEMENTWISE more; a sieved pair costs p + 1 plus its compare.
# The per-list products and the sieve are small products, which ran at the rate of one large product on
# this machine (512 x 450 against 512 x 65,536 rows, d = 384), so no penalty factor is applied to them.
# Brute-force chunks use a tiled kernel with fewer passes than the pruned blocks (tsds.retrieval.density_flat):
# charging them the same _ELEMENTWISE leans towards the pruned path.
_ELEMENTWISE = 12.0
_SIEVE_COMPARE = 2.0
# The direction test (tsds.retrieval.density_bounds._Directions) multiplies a list's members by a few
# directions: a thin product, 4 G multiply-adds/s on one core (447 x 384 members against 3 directions:
# 130 us), a fifth to a ninth of a large product's rate; with the passes around it, 12 matched the timings
# (sieve alone against direction test first) on the demo store's texts and on the 200k benchmark. The
# blocks it leaves pay the sieve and one more pass for its pair mask. Until the plan has decided whether to
# use it, every PROBE_EVERY-th list a pruned chunk visits is also tested by direction, and only counted.
_DIRECTION_PRODUCT = 12.0
PROBE_EVERY = 8
_PROBE_PAIRS = 1 << 20  # pairs the probes see before the plan decides
# The pairs the sieve leaves are tested by a float32 product before their exact (float64) products, which
# then cover only the points and members with a pair that may lie within sigma (tsds.retrieval.density,
# _narrowed_sums): worth it unless most of those pairs lie within sigma anyway. The selection's densities,
# recorded and replayed, all pairs narrowed against none: 200k x 384 (a quarter of the multiplied pairs within
# sigma) 4.51-4.60 -> 3.98-4.36 s; 50k x 256 (45% within) 0.81-0.84 against 0.82-0.85 s; the demo store's
# texts at sigma 0.8 1.88 -> 1.26-1.50 s, at 0.5 0.46-0.57 -> 0.43-0.44 s, at 0.3 0.34-0.40 against
# 0.36-0.41 s (0.8M pairs multiplied: little to narrow either way).
NARROW_BELOW = 0.5


@dataclass(frozen=True)
class Nearest:
    """Approximate densities (``--density approx``): only the members of each point's ``lists`` IVF lists
    nearest by centroid count, as an IVF search probes them. Never above the exact density."""

    lists: int

    def __post_init__(self):
        if isinstance(self.lists, bool) or not isinstance(self.lists, (int, np.integer)) or self.lists < 1:
            raise ValueError(f"Nearest: lists must be a whole number of at least 1, got {self.lists!r}")


@dataclass
class DensityPlan:
    """The path rule for one index and sigma, and what the pruned chunks measured so far."""

    mode: str = "auto"
    sieved: int = 0  # (point, member) pairs the list bounds kept, over the pruned chunks
    multiplied: int = 0  # of those, the pairs multiplied in full
    directions: bool | None = None  # whether pruned chunks test by direction before the sieve; None: not decided
    probed: int = 0  # pairs the list bounds kept in the probed lists, before the decision
    probe_kept: int = 0  # of those, the pairs the direction test kept
    probe_work: int = 0  # the direction test's multiply-adds on them
    within: int = 0  # of the multiplied pairs, those within sigma

    @property
    def narrows(self) -> bool:
        """Whether pruned chunks test their pairs by a float32 product before the exact ones (until measured:
        yes)."""
        return self.within < NARROW_BELOW * self.multiplied if self.multiplied else True

    @property
    def keep(self) -> float | None:
        """Fraction of sieved pairs multiplied in full, or None before any was measured."""
        return self.multiplied / self.sieved if self.sieved else None

    def brute(self, bounded: int, points: int, ntotal: int, dim: int, p: int) -> bool:
        """Whether a chunk of ``points`` whose lists kept by the bound hold ``bounded`` (point, member)
        pairs is cheaper multiplied against every one of the ``ntotal`` stored vectors."""
        if self.mode != "auto":
            return self.mode == "brute"
        keep = self.keep
        if keep is None:
            return False
        pruned = bounded * (self._filter(p) + keep * (dim + _ELEMENTWISE))
        return points * ntotal * (dim + _ELEMENTWISE) < pruned

    def _filter(self, p: int, directions: bool | None = None) -> float:
        """Multiply-adds per bounded pair of the filters before the full products (``directions``: with the
        direction test or not; None: as the plan decided), as the probes measured it."""
        sieve = p + 1 + _SIEVE_COMPARE
        if not (self.directions if directions is None else directions) or not self.probed:
            return sieve
        return (_DIRECTION_PRODUCT * self.probe_work + self.probe_kept * (sieve + _SIEVE_COMPARE)) / self.probed

    def learn(self, sieved: int, multiplied: int, probe: tuple[int, int, int] = (0, 0, 0), dim: int = 0,
              p: int = 0, within: int = 0) -> None:
        """Add what one batch of pruned chunks counted (called between batches, never inside one); ``within``:
        how many of the ``multiplied`` pairs lie within sigma.

        ``probe``: (pairs, pairs in the blocks left, multiply-adds) of the direction test on the probed
        lists. Once the probes have seen _PROBE_PAIRS pairs, their counts alone decide whether later chunks
        test by direction: when the test's products, the sieve on the blocks it leaves and the full products
        on what the sieve alone keeps (at most) cost less than the sieve on every bounded pair and its full
        products.
        """
        self.sieved += int(sieved)
        self.multiplied += int(multiplied)
        self.within += int(within)
        if self.directions is not None:
            return
        self.probed += int(probe[0])
        self.probe_kept += int(probe[1])
        self.probe_work += int(probe[2])
        if self.probed >= _PROBE_PAIRS and self.sieved:
            keep, kept = self.multiplied / self.sieved, self.probe_kept / self.probed
            alone = self._filter(p, False) + keep * (dim + _ELEMENTWISE)
            first = self._filter(p, True) + min(keep, kept) * (dim + _ELEMENTWISE)
            self.directions = bool(first < alone)


def plan_for(index, sigma: float, mode: str | Nearest = "auto") -> DensityPlan:
    """The plan kept on ``index`` for ``sigma`` (a fresh one when the mode changes). ``Nearest(P)``: the
    approximate densities' own plan, always pruned (their lists are the nearest P, not a choice)."""
    if isinstance(mode, Nearest):
        return index._density_plans.setdefault((float(sigma), mode), DensityPlan(mode="pruned"))
    if mode not in PATHS:
        from tsds.errors import ParameterError

        raise ParameterError(f"density path must be one of {', '.join(PATHS)}, got {mode!r}")
    plans = index._density_plans
    key = (float(sigma), mode)
    if key not in plans:
        plans[key] = DensityPlan(mode=mode)
    return plans[key]


def bounded_pairs(need: np.ndarray, sizes: np.ndarray) -> int:
    """(point, member) pairs in the lists the bound keeps: ``need`` is points x lists, ``sizes`` the lists'."""
    return int(need.sum(axis=0) @ sizes)
