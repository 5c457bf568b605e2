"""Execution engines for plain functions: local (this process) and Ray (a cluster).

    engine = make_engine("ray", address=None)     # starts a local Ray instance; "auto" or "ray://..." to join
    store = build_store(paths, out, engine=engine)
    index = PoolStore(out, engine=engine).index("euclidean")
"""

from __future__ import annotations

from tsds.engines.local import LocalEngine, read_ahead
from tsds.errors import ParameterError

ENGINES = ("local", "ray")


def make_engine(name: str = "local", address: str | None = None, **kwargs):
    """The engine called ``name``: ``local`` or ``ray`` (``address``: a running cluster; default a local one)."""
    if name == "local":
        if address:
            raise ParameterError("--ray-address applies to --engine ray only")
        return LocalEngine()
    if name == "ray":
        from tsds.engines.ray import RayEngine

        return RayEngine(address=address, **kwargs)
    raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")


__all__ = ["ENGINES", "LocalEngine", "make_engine", "read_ahead"]
