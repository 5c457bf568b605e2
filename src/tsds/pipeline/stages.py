"""Stage bookkeeping: wall time and peak memory per stage, a JSON log line per finished stage."""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager

import psutil

log = logging.getLogger("tsds.stage")


class _PeakSampler:
    """Samples this process's resident memory in a thread; the stage peak is the max seen."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class StageLog:
    """Collects {stage: {seconds, peak_rss_mb, ...}} for the manifest."""

    def __init__(self, measure_memory: bool = True):
        self.stages: dict[str, dict] = {}
        self.measure_memory = measure_memory

    @contextmanager
    def stage(self, name: str, **extra):
        start = time.perf_counter()
        info = dict(extra)
        sampler = _PeakSampler() if self.measure_memory else None
        if sampler:
            sampler.__enter__()
        try:
            yield info
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
            entry = self.stages.setdefault(name, {"seconds": 0.0})
            entry["seconds"] = round(entry["seconds"] + time.perf_counter() - start, 6)
            if sampler:
                entry["peak_rss_mb"] = round(max(entry.get("peak_rss_mb", 0), sampler.peak / 2**20), 1)
            entry.update(info)
            log.info(json.dumps({"event": "stage_done", "stage": name, **entry}, default=str))
