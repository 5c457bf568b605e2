"""What ``Selector.select`` returns: the selection's arrays, its resolved parameters, its records and writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tsds.errors import ParameterError


def as_dataset(records: list[dict]):
    """A ``datasets.Dataset`` of the records when that library is installed, else the list itself."""
    try:
        import datasets
    except ImportError:
        return records
    return datasets.Dataset.from_list(records)


class SelectionResult:
    """One selection: arrays, resolved parameters (scikit-learn style, trailing underscore), records, writers.

    Attributes
    ----------
    indices : ndarray of shape (n,)
        Drawn pool row ids, sorted; a row drawn twice appears twice.
    probabilities : ndarray of shape (N,)
        The selection distribution p over the pool rows (sums to 1).
    counts : ndarray of shape (N,)
        Draws per pool row.
    method_ : str
        The method that selected ("tsds", "random", "knn", "dsir", "full").
    alpha_, sigma_, C_ : float or None
        The parameters used, "auto" resolved (None for a baseline, which uses none of them; ``alpha_`` is a
        list, one per target, for several targets).
    objective_ : float or None
        The TSDS objective at the optimum (None for a baseline or several targets).
    selection : Selection
        Everything the pipeline produced (neighbour lists, allocation, timings).

    Examples
    --------
    >>> import numpy as np, tsds
    >>> X = np.random.default_rng(0).standard_normal((400, 8)).astype(np.float32)
    >>> result = tsds.Selector(size=30, sigma=0).select(X, X[:6])
    >>> result.indices.shape, result.sigma_, result.method_
    ((30,), 0.0, 'tsds')
    >>> result.objective_ > 0
    True
    """

    def __init__(self, selection, pool, source, info: dict, stages=None):
        self.selection, self.pool, self.source, self.info, self._stages = selection, pool, source, info, stages
        self._saved: Path | None = None

    @property
    def _multi(self) -> bool:
        return hasattr(self.selection, "selections")

    @property
    def indices(self) -> np.ndarray:
        from tsds.core.sampling import counts_to_indices

        return counts_to_indices(self.counts) if self._multi else self.selection.selected_indices

    @property
    def probabilities(self) -> np.ndarray:
        return self.selection.probabilities

    @property
    def counts(self) -> np.ndarray:
        return self.selection.counts

    @property
    def method_(self) -> str:
        return self.info.get("method", "tsds")

    def _config(self):
        return self.info["config"] if self._multi else self.selection.config

    @property
    def alpha_(self):
        if self._multi:
            return [s.config.alpha for s in self.selection.selections]
        return self._config().alpha if self.method_ == "tsds" else None

    @property
    def sigma_(self):
        return self._config().sigma if self.method_ == "tsds" else None

    @property
    def C_(self):
        return self._config().C if self.method_ == "tsds" else None

    @property
    def objective_(self):
        if self._multi or self.selection.allocation is None:
            return None
        return float(self.selection.allocation.objective)

    def __len__(self) -> int:
        return int(self.counts.sum())

    def __repr__(self) -> str:
        return (f"SelectionResult(method={self.method_!r}, drawn={len(self)}, "
                f"distinct={int(np.count_nonzero(self.counts))})")

    def _need_pool(self, what: str):
        if self.pool is None:
            raise ParameterError(f"{what} needs a pool store (tsds.Pool); this selection was made on arrays")
        return self.pool.store

    def records(self):
        """The drawn records, one per draw, with all their fields and the ``_tsds_*`` provenance columns;
        each fetched from its pool file and checked against the store (a changed file is refused).

        Returns
        -------
        datasets.Dataset, or list of dict when ``datasets`` is not installed
        """
        from tsds.pipeline.multi import TARGET_COLUMN
        from tsds.pipeline.text import selected_records

        store = self._need_pool("records()")
        if self._multi:
            m = self.selection
            rows = [{**r, TARGET_COLUMN: name} for name, sel, texts in zip(m.names, m.selections, m.query_texts)
                    for r in selected_records(store, sel, texts)]
        else:
            rows = selected_records(store, self.selection, self.info["query_texts"])
        return as_dataset(rows)

    def save(self, out, *, records_name: str = "selected.jsonl", overwrite: bool = False,
             license: str | None = None) -> Path:
        """Write the selection into the folder ``out``, atomically: the records file, probabilities.npy,
        selected_indices.npy, manifest.json and a README.md dataset card (arrays and manifest only for a
        selection on arrays).

        Parameters
        ----------
        out : path
            Output folder (must not exist unless ``overwrite``).
        records_name : str
            Name of the records file: .jsonl, .jsonl.gz or .parquet.
        overwrite : bool
            Replace an existing folder.
        license : str, optional
            The selection's licence in the card's metadata (e.g. cc-by-4.0); default ``other`` with a note.

        Returns
        -------
        Path
            ``out``.
        """
        from tsds.pipeline.multi import write_multi_selection
        from tsds.pipeline.write import Output, write_text_selection

        if self.pool is None:
            from tsds.api.arrays import write_selection

            self._saved = write_selection(self.selection, out, overwrite=overwrite)
            return self._saved
        output = Output(out, records_name=records_name, overwrite=overwrite, license=license)
        if self._multi:
            write_multi_selection(output, self.pool.store, self.selection, self.info, stages=self._stages)
        else:
            write_text_selection(output, self.pool.store, self.selection, self.info, queries_path=self.source,
                                 stages=self._stages)
        self._saved = Path(out)
        return self._saved

    def report(self, out=None) -> Path:
        """Write report.html and figures/*.png into the selection's folder ``out`` (saved first when this
        result was not saved there yet).

        Returns
        -------
        Path
            The report file.
        """
        from tsds.report import build_report

        store = self._need_pool("report()")
        out = Path(out) if out is not None else self._saved
        if out is None:
            raise ParameterError("report(out): give the folder to write the selection and its report into")
        if self._saved is None or Path(out).resolve() != self._saved.resolve():
            self.save(out)
        build_report(out, store=store)
        return Path(out) / "report.html"
