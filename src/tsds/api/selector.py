"""``tsds.Selector``: the selection parameters, chosen once and applied to a pool for any query set; and
``Selection results`` with the records, the arrays, the resolved parameters and the writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsds.config import PRESETS, SelectionConfig, make_config
from tsds.errors import InputError, ParameterError
from tsds.io.readers import TextSpec

_AUTO = "auto"


def _is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == _AUTO


def _number(name: str, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a number or 'auto', got {value!r}") from None


class Selector:
    """Choose training data for a target task from a pool: TSDS, or a baseline, with one set of parameters.

    Parameters
    ----------
    size : int
        Budget n: how many examples to draw.
    alpha : float in [0, 1] or "auto", optional
        Alignment (1) versus diversity (0). "auto": the largest alpha whose support of p holds
        ``support_multiple`` x size candidates. Default (preset "default"): 0.5, lowered as far as needed for
        the support of p to hold twice the n distinct draws (reported in the manifest's ``calibration``).
    sigma : float >= 0 or "auto", optional
        Near-duplicate kernel radius, in embedding distance units; 0 disables the diversity term's densities;
        default 0.3 (cosine distance). "auto": the median nearest-neighbour distance in the pool / 3.
    C : float > 0, optional
        Scale of distances in the objective (embedding distance units); default 1.
    method : str
        "tsds", or a baseline with the same output: "random", "knn", "dsir", "full" (tsds.methods).
    support_multiple : float >= 1, optional
        With an automatic alpha: the support of p must hold at least this multiple of ``size`` (default 2
        for ``alpha="auto"`` and for the default setting's alpha).
    preset : {"default", "paper"}, optional
        Values of the parameters not given. "default" (for a pool store): cosine, C 1, sigma 0.3, alpha 0.5
        lowered as needed, n distinct draws in turns over the queries (tsds.config.PRESETS). "paper": the published defaults (euclidean,
        C 5, sigma 0.75, alpha 0.5, draws with replacement), which is also what pool *embeddings* (arrays)
        get when no preset is given, as with the authors' script.
    **params
        Other fields of ``tsds.SelectionConfig``: metric ("euclidean" or "cosine"), sampling
        ("with-replacement" or "without-replacement"), seed, index, initial_k, density ("exact", or
        "approx": each density over its point's ``density_lists`` nearest index lists only, never above
        exact, a sample checked against exact in the result's manifest), ...

    A baseline refuses the TSDS parameters (alpha, sigma, C, ...) when they are given explicitly.

    Examples
    --------
    >>> import tsds
    >>> sel = tsds.Selector(size=100, alpha="auto", sigma=0.3)
    >>> sel.config_.alpha_auto, sel.config_.sigma
    (2.0, 0.3)
    >>> c = tsds.Selector(size=100).config_
    >>> c.preset, c.metric, c.C, c.sigma, c.sampling, c.alpha_auto, c.alpha_auto_max
    ('default', 'cosine', 1.0, 0.3, 'without-replacement', 2.0, 0.5)
    >>> c = tsds.Selector(size=100, preset="paper").config_
    >>> c.metric, c.C, c.sigma, c.alpha, c.sampling, c.alpha_auto
    ('euclidean', 5.0, 0.75, 0.5, 'with-replacement', None)
    >>> tsds.Selector(size=10, method="knn").method
    'knn'
    """

    def __init__(self, size: int, *, alpha=None, sigma=None, C=None, method: str = "tsds",
                 support_multiple: float | None = None, preset: str | None = None, **params):
        from tsds.methods import get_method

        self.size, self.alpha, self.sigma, self.C = size, alpha, sigma, C
        self.method, self.support_multiple, self.preset, self.params = method, support_multiple, preset, dict(params)
        get_method(method)
        # a baseline takes no TSDS parameter, so no preset fills them in
        chosen = (preset or "default") if method == "tsds" else None
        self.config_: SelectionConfig = make_config(preset=chosen, **self._config_params(chosen))

    def _array_config(self) -> SelectionConfig:
        """The config for pool embeddings: the published defaults unless a preset was asked for."""
        return self.config_ if self.preset else make_config(preset="paper", **self._config_params("paper"))

    def _config_params(self, preset: str | None) -> dict:
        params = {**self.params, "size": self.size, "C": self.C}
        automatic = PRESETS.get(preset, {})
        if self.alpha is None and self.support_multiple is not None and "alpha_auto" in automatic:
            params.update(alpha_auto=self.support_multiple, alpha_auto_max=automatic["alpha_auto_max"])
        if _is_auto(self.alpha):
            params["alpha_auto"] = self.support_multiple or 2.0
        elif self.alpha is not None:
            params["alpha"] = _number("alpha", self.alpha)
        if _is_auto(self.sigma):
            params["sigma_auto"] = True
        elif self.sigma is not None:
            params["sigma"] = _number("sigma", self.sigma)
        return params

    def get_params(self) -> dict:
        """The parameters as given (scikit-learn's convention)."""
        return {"size": self.size, "alpha": self.alpha, "sigma": self.sigma, "C": self.C, "method": self.method,
                "support_multiple": self.support_multiple, "preset": self.preset, **self.params}

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                          if v is not None and not (k == "method" and v == "tsds"))
        return f"Selector({given})"

    def select(self, pool, queries, *, exclude=None, exclude_radius: float = 0.0, keep_zero_rows: bool = False,
               query_spec: TextSpec | None = None, progress=None, task_name: str | None = None):
        """Select from ``pool`` for ``queries``.

        Parameters
        ----------
        pool : Pool, path of a store folder, or ndarray of shape (N, d)
            A pool built by ``Pool.build``; or pool embeddings (then ``queries`` are embeddings too, method tsds).
        queries : path, list of str, datasets.Dataset, or ndarray of shape (M, d)
            The target's query examples: a file, texts, a Dataset (its text read with ``query_spec`` or the
            pool's text spec), or embeddings from the pool's own embedder.
        exclude : path or list of paths, optional
            Evaluation file(s) whose items are removed from the pool first (within ``exclude_radius``, or
            equal after normalising whitespace and case).
        exclude_radius : float
            Embedding distance for ``exclude``.
        keep_zero_rows : bool
            Let pool rows with an all-zero embedding be selected (left out by default).
        query_spec : TextSpec, optional
            How to read the queries' text (default: the pool's).
        progress : callable, optional
            Called with the number of density points computed.
        task_name : str, optional
            The target's name in the card and manifest (default: from the query file's path).

        Returns
        -------
        SelectionResult
        """
        from tsds.api.arrays import select_embeddings
        from tsds.api.pool import Pool
        from tsds.api.result import SelectionResult

        if isinstance(pool, np.ndarray):
            if self.method != "tsds":
                raise ParameterError(f"method {self.method!r} needs a pool store (tsds.Pool); arrays select with tsds")
            config = self._array_config()
            for flag, used in (("alpha auto", config.alpha_auto is not None),
                               ("sigma auto", config.sigma_auto), ("exclude", exclude is not None),
                               ("one_per_cluster", config.one_per_cluster), ("query_turns", config.query_turns),
                               ("keep_zero_rows", keep_zero_rows)):
                if used:
                    raise ParameterError(f"{flag} needs a pool store (tsds.Pool)")
            selection = select_embeddings(pool, _array(queries, "queries"), config=config, progress=progress)
            return SelectionResult(selection, None, None, {"method": "tsds"})
        pool = pool if isinstance(pool, Pool) else Pool.open(pool)
        return self._select_text(pool, queries, dict(exclude=exclude, exclude_radius=exclude_radius,
                                                     keep_zero_rows=keep_zero_rows, query_spec=query_spec,
                                                     progress=progress), task_name)

    def _select_text(self, pool, queries, options: dict, task_name):
        from tsds.api.result import SelectionResult
        from tsds.methods.run import run_method, split_options
        from tsds.pipeline.stages import StageLog

        reading, prep, _ = split_options({k: v for k, v in options.items() if v is not None})
        reading.stages = StageLog()
        source = queries if isinstance(queries, (str, Path)) else None
        queries = query_input(pool, queries, reading.query_spec)
        selection = run_method(self.method, pool.store, queries, self.config_, reading=reading, preparation=prep)
        from tsds.methods import get_method

        selection.info.update(task_name=task_name, description=get_method(self.method).description)
        return SelectionResult(selection, pool, source, selection.info, stages=reading.stages)

    def select_targets(self, pool, targets, *, exclude=None, exclude_radius: float = 0.0,
                       keep_zero_rows: bool = False, query_spec: TextSpec | None = None, progress=None):
        """Several target tasks sharing the budget (method tsds).

        Parameters
        ----------
        pool : Pool or path of a store folder
        targets : list of "path:weight" strings or (queries, weight) pairs
            Each target's queries (a file or a list of texts) and its share of the budget (any positive
            numbers, normalised).
        exclude, exclude_radius, keep_zero_rows, query_spec, progress
            As for ``select``.

        Returns
        -------
        SelectionResult
            Its records carry a ``_tsds_target`` column; ``probabilities`` is the mixture.
        """
        from tsds.api.pool import Pool
        from tsds.api.result import SelectionResult
        from tsds.pipeline.multi import select_multi
        from tsds.pipeline.prepare import Preparation
        from tsds.pipeline.stages import StageLog

        if self.method != "tsds":
            raise ParameterError(f"several targets are supported with method tsds, not {self.method!r}")
        pool = pool if isinstance(pool, Pool) else Pool.open(pool)
        stages = StageLog()
        prep = Preparation(exclude=exclude, exclude_radius=exclude_radius, keep_zero_rows=keep_zero_rows)
        multi, info = select_multi(pool.store, targets, self.config_, query_spec=query_spec, stages=stages,
                                   progress=progress, preparation=prep)
        return SelectionResult(multi, pool, None, info, stages=stages)


def _array(x, name: str) -> np.ndarray:
    if isinstance(x, (str, Path)) and str(x).endswith(".npy"):
        return x
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name}: with pool embeddings, the queries must be embeddings too (an array or a .npy)")
    return x


def query_input(pool, queries, spec: TextSpec | None):
    """What the method runner takes: a path or a list of texts as given; a Dataset's texts read with
    ``spec`` (default the pool's); an array as embedded queries (checked against the pool's dimension)."""
    from tsds.api.pool import is_dataset
    from tsds.pipeline.queries import QuerySet

    if isinstance(queries, (str, Path)):
        return queries
    if isinstance(queries, np.ndarray):
        q = np.asarray(queries, dtype=np.float32)
        dim = int(pool.store.meta["dim"])
        if q.ndim != 2 or q.shape[1] != dim or q.shape[0] == 0:
            raise InputError(f"queries: expected an array of shape (M, {dim}) from the pool's embedder, "
                             f"got shape {q.shape}")
        return QuerySet([f"query {j}" for j in range(q.shape[0])], q, None, None)
    if is_dataset(queries):
        spec = spec or pool.store.text_spec
        return [spec.extract(dict(row)) for row in queries]
    texts = list(queries)
    if not all(isinstance(t, str) for t in texts):
        raise InputError("queries: a path, a list of strings, a datasets.Dataset or an array of embeddings")
    return texts
