"""The registry of methods and the one runner every caller goes through: open the store, read and embed
the queries, prepare the pool (the same eligible rows for every method), run the method."""

from __future__ import annotations

from dataclasses import dataclass, fields

from tsds.config import SelectionConfig
from tsds.errors import ParameterError
from tsds.io.readers import TextSpec
from tsds.methods.base import Method
from tsds.methods.baselines import Dsir, Full, Knn, Random
from tsds.methods.tsds import Tsds
from tsds.pipeline.prepare import Preparation, open_store, prepare_pool
from tsds.pipeline.eligibility import refuse_zero_queries
from tsds.pipeline.queries import QuerySet, embed_queries, load_store_embedder
from tsds.pipeline.select import Selection
from tsds.pipeline.stages import StageLog

METHODS: dict[str, Method] = {m.name: m for m in (Tsds(), Random(), Knn(), Dsir(), Full())}
BASELINES = tuple(name for name in METHODS if name != "tsds")


def get_method(name, **options) -> Method:
    """The method registered under ``name`` (``options``: its own settings, e.g. dsir's ``n``); a Method
    object passes through."""
    if not isinstance(name, str):
        return name
    if name not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {name!r}")
    return type(METHODS[name])(**options) if options else METHODS[name]


@dataclass
class Reading:
    """How the queries are read and embedded, and how progress is reported.

    query_spec : TextSpec, optional
        How to read text from the query records (default: the store's).
    embedder : Embedder, optional
        The store's embedder, loaded already (default: loaded from the store's spec).
    stages : StageLog, optional
        Collects the stages' timings (the manifest's ``timings``).
    progress : callable, optional
        Called with the number of density points computed (a progress bar).
    """

    query_spec: TextSpec | None = None
    embedder: object = None
    stages: StageLog | None = None
    progress: object = None


def run_method(method, store, queries, config: SelectionConfig, *, reading: Reading | None = None,
               preparation: Preparation | None = None) -> Selection:
    """Select with ``method`` (a name of ``METHODS`` or a Method) from a pool store for ``queries`` (a file
    or a list of texts). The selection's ``info`` holds what the writer needs beside the arrays."""
    m = get_method(method)
    config = m.configure(config)
    reading = reading or Reading()
    store = open_store(store)
    stages = reading.stages or StageLog()
    embedder = load_store_embedder(store, reading.embedder)
    if isinstance(queries, QuerySet):  # embedded already (e.g. query vectors given as an array)
        refuse_zero_queries(queries.texts, queries.vectors, queries.source)
        qs = queries
    else:
        qs = embed_queries(store, queries, embedder, query_spec=reading.query_spec, stages=stages)
    pool = prepare_pool(store, config, embedder=embedder, stages=stages, preparation=preparation,
                        densities=m.uses_densities)
    pool.progress = reading.progress
    sel = m.select(pool, qs, pool.config)
    elig = pool.eligibility
    sel.info = {"query_texts": qs.texts, "query_read": qs.read, **sel.info,
                "decontamination": elig.decontamination.summary() if elig.decontamination else None,
                "eligibility": elig.summary(), "excluded_rows": elig.excluded}
    sel.timings = sel.timings if sel.timings is stages.stages else stages.stages
    sel.timings["method"] = m.name
    return sel


_READING = {f.name for f in fields(Reading)}
_PREPARATION = {f.name for f in fields(Preparation)}


def split_options(options: dict) -> tuple[Reading, Preparation, dict]:
    """Keyword options of the one-call functions -> (Reading, Preparation, method options); an unknown
    name is refused, not ignored."""
    unknown = sorted(set(options) - _READING - _PREPARATION - {"dsir_options"})
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; accepted: "
                        f"{', '.join(sorted(_READING | _PREPARATION | {'dsir_options'}))}")
    reading = Reading(**{k: v for k, v in options.items() if k in _READING})
    prep = Preparation(**{k: v for k, v in options.items() if k in _PREPARATION})
    return reading, prep, options.get("dsir_options") or {}


def select_method(method: str, store, queries, config: SelectionConfig, **options) -> tuple[Selection, dict]:
    """One dispatch point: TSDS or any baseline; (Selection, info). ``options``: the fields of ``Reading``
    and ``tsds.pipeline.prepare.Preparation`` (exclude, exclude_radius, exclude_spec, keep_zero_rows,
    eligibility, pool_texts), and ``dsir_options``."""
    reading, prep, method_options = split_options(options)
    m = get_method(method, **(method_options if method == "dsir" else {}))
    sel = run_method(m, store, queries, config, reading=reading, preparation=prep)
    return sel, sel.info


def select_baseline(method: str, store, queries, config: SelectionConfig, **options) -> tuple[Selection, dict]:
    """One baseline (random, knn, dsir, full); as ``select_method``."""
    if method not in BASELINES:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return select_method(method, store, queries, config, **options)


def select_from_store(store, queries, config: SelectionConfig, **options) -> tuple[Selection, dict]:
    """TSDS from a pool store; as ``select_method``."""
    return select_method("tsds", store, queries, config, **options)
