"""Benchmark: building a pool store from raw text with the static embedder, against the embedder alone.

How to run
----------
    .venv/bin/python benchmarks/bench_build.py                    # 100k and 1M texts, writes benchmarks/results/build.json
    .venv/bin/python benchmarks/bench_build.py --sizes 100000     # a subset (no JSON unless --json is given)
    .venv/bin/python benchmarks/bench_build.py --formats jsonl.gz jsonl

Inputs are generated once into ``benchmarks/work/`` (git-ignored) and reused by later runs; stores are
built into ``benchmarks/work/store-*`` and removed afterwards. The full run takes about 5 minutes on
2 idle cores, most of it the 1M case (generating its 1M-line input takes about a minute the first
time); on a loaded machine it takes much longer.

What it measures
----------------
Texts are real: the 35,894 texts of the bundled pool ``data/demo/pool.jsonl.gz``, used as they are for
the first 35,894 rows and recombined for the rest (a text's sentences rotated, plus a clause of 4-12
words borrowed from another text; the few that would still repeat get a counter), so every text is
distinct and the length distribution stays close to the original. Each row keeps the original record's
other fields (id made unique), so the reader parses realistic JSON records.

For each size (default 100,000 and 1,000,000) and input format (default ``.jsonl.gz``; ``.jsonl`` too
for 100k), every job runs in a fresh subprocess, after one ``load_embedder("static")`` beforehand so
the model's one-time distillation is in no timing:

* ``embed``: the embedder's own rate. The texts are read into memory first (not timed) with the same
  reader and the same shard size (8192 rows), then ``embedder.embed`` is timed on each shard's texts
  one after another, exactly the calls the pipeline makes.
* ``build``: ``tsds.store.build_store(file, out)`` end to end (loading the embedder, reading and
  parsing, text hashing, embedding, shard writes with fsync, the FAISS index: flat up to 50k rows,
  IVF-Flat above), timed as a whole. The same run times its parts by wrapping, in the child only,
  the reader's batch iterator, ``texts_sha256``, ``embedder.embed``, the main thread's waits for the shard
  writes (files are written by a background thread while the next shard is embedded; that thread's own
  time is reported apart as ``background_write_s``) and
  ``PoolStore.index``, and within the index its k-means training, the assignment of every vector to a
  list, and saving the index file.

Each job runs three times for sizes up to 100k and twice above (embed and build runs alternating, so a
burst of load from other processes hits both alike); the best run of each is kept. Each child also
reports its CPU seconds (all threads), and ``ratio_cpu_time`` = embed CPU s / build CPU s is given beside
the wall-clock ratio: on a shared machine (other processes on the same cores) wall-clock rates swing by
2x between runs, CPU time much less, so read both. Each run records ``other_processes_cores``: the CPU
that other processes used meanwhile (machine-wide busy CPU from /proc/stat minus the child's own, per
second of the run); a ratio is only meaningful when both of its runs saw about the same, ideally ~0.
Each run also records ``io_stall_s``: the seconds in which some task on the machine waited for I/O
(/proc/pressure/io), the child's own fsyncs included; the disk is shared too, and a slow disk shows
in the build alone (its shard writes and the index save end in fsync). The 1-minute load average is
recorded after each build run.

Reported: texts/s of each job, the ratio pipeline rate / embedder rate, both end to end and without
the index (the issue's target: the pipeline keeps at least 80 % of the embedder's rate), the time
split of the build, and the peak RSS of each child (``ru_maxrss`` of the child itself, i.e. the true
high-water mark). Writes everything, with machine info, to ``benchmarks/results/build.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
RESULTS = HERE / "results" / "build.json"
DEMO = ROOT / "data" / "demo" / "pool.jsonl.gz"
SHARD_ROWS = 8192  # tsds.store.pool.SHARD_ROWS, the default of build_store and `tsds pool build`
GEN_VERSION = 1  # bump when the text generator changes, so cached inputs are rebuilt


# ---------------------------------------------------------------------------------------------
# input generation
# ---------------------------------------------------------------------------------------------

_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def _variant(base: str, donor: str, r: int, k: int) -> str:
    """Round r >= 1 of a text: its sentences rotated by r, then a clause borrowed from ``donor``."""
    parts = [s for s in _SENT.split(base) if s]
    if len(parts) > 1:
        j = r % len(parts)
        parts = parts[j:] + parts[:j]
    words = donor.split()
    if words:
        n = 4 + (k % 9)
        start = (k * 31) % max(1, len(words) - n + 1)
        clause = " ".join(words[start:start + n]).rstrip(".,;:!?")
        parts.append(clause[:1].upper() + clause[1:] + ".")
    return " ".join(parts)


def input_path(n: int, fmt: str) -> Path:
    return WORK / f"build-pool-n{n}-v{GEN_VERSION}.{fmt}"


def generate(n: int, fmt: str) -> dict:
    """Write ``n`` distinct realistic records to benchmarks/work (once; reused when present)."""
    path = input_path(n, fmt)
    info_path = path.with_name(path.name + ".info.json")
    if path.is_file() and info_path.is_file():
        return json.loads(info_path.read_text())
    WORK.mkdir(parents=True, exist_ok=True)
    with gzip.open(DEMO, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    base_n = len(records)
    texts = [r["text"] for r in records]
    seen: set[bytes] = set()
    t0 = time.perf_counter()
    tmp = path.with_name(path.name + ".tmp")
    opener = (lambda p: gzip.open(p, "wt", encoding="utf-8", compresslevel=6)) if fmt.endswith(".gz") \
        else (lambda p: open(p, "w", encoding="utf-8"))
    chars = 0
    countered = 0
    with opener(tmp) as out:
        for i in range(n):
            r, b = divmod(i, base_n)
            rec = dict(records[b])
            if r == 0:
                text = texts[b]
            else:
                k = (i * 2654435761) & 0xFFFFFFFF
                text = _variant(texts[b], texts[k % base_n], r, k >> 8)
                rec["id"] = f"{rec.get('id', b)}~{r}"
            key = hashlib.blake2b(text.encode(), digest_size=12).digest()
            if key in seen:
                text = f"{text} ({r})"
                key = hashlib.blake2b(text.encode(), digest_size=12).digest()
                countered += 1
            seen.add(key)
            rec["text"] = text
            chars += len(text)
            out.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    info = {"file": path.name, "rows": n, "distinct_texts": len(seen), "base_texts": base_n,
            "texts_given_a_counter": countered, "mean_chars": chars / n, "bytes": path.stat().st_size,
            "generate_s": time.perf_counter() - t0}
    info_path.write_text(json.dumps(info, indent=1))
    return info


# ---------------------------------------------------------------------------------------------
# child jobs (each in a fresh process)
# ---------------------------------------------------------------------------------------------


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return ru.ru_utime + ru.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def child_embed(path: str) -> dict:
    from tsds.embed import load_embedder
    from tsds.io.readers import iter_batches

    emb = load_embedder("static")
    shards = [b.texts for b in iter_batches(path, batch_size=SHARD_ROWS)]
    n = sum(len(t) for t in shards)
    rss_loaded = _peak_rss_mb()
    c0, t0 = _cpu_s(), time.perf_counter()
    for texts in shards:
        emb.embed(texts)
    dt = time.perf_counter() - t0
    return {"rows": n, "embed_s": dt, "rate": n / dt, "cpu_s": _cpu_s() - c0, "peak_rss_mb": _peak_rss_mb(),
            "rss_after_loading_texts_mb": rss_loaded}


def child_build(path: str, out: str) -> dict:
    import threading

    import faiss

    from tsds.embed import load_embedder
    from tsds.store import pool

    parts = {"load_embedder": 0.0, "read_parse": 0.0, "hash": 0.0, "embed": 0.0, "write": 0.0, "index": 0.0}
    index_parts = {"train": 0.0, "assign": 0.0, "save": 0.0}
    background = {"write": 0.0}

    in_index = {"on": False}

    def clocked(fn, record):
        """``fn`` that passes its wall seconds to ``record`` (also when it raises)."""
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                record(time.perf_counter() - t)
        return wrapper

    def timed(name, fn):
        def record(seconds):
            # the index's own files are counted in "index"; shard files are written by a background
            # thread (overlapping the embedding of the next shard): the main thread's wait for them is
            # "write", the writer thread's own time "background_write" (texts are hashed in the
            # read-ahead thread, overlapping the embedding, and are counted there)
            if in_index["on"]:
                return
            if name == "write_file":
                if threading.current_thread().name.startswith("tsds-shard-writer"):
                    background["write"] += seconds
            else:
                parts[name] += seconds
        return clocked(fn, record)

    def timed_index(name, fn):
        def record(seconds):
            if in_index["on"]:
                index_parts[name] += seconds
        return clocked(fn, record)

    faiss.IndexIVFFlat.train = timed_index("train", faiss.IndexIVFFlat.train)
    faiss.IndexFlatL2.search = timed_index("assign", faiss.IndexFlatL2.search)
    pool.atomic_write_index = timed_index("save", pool.atomic_write_index)

    real_iter = pool.iter_batches

    def iter_batches(*a, **k):
        it = iter(real_iter(*a, **k))
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                parts["read_parse"] += time.perf_counter() - t
                return
            parts["read_parse"] += time.perf_counter() - t
            yield batch

    pool.iter_batches = iter_batches
    pool.texts_sha256 = timed("hash", pool.texts_sha256)
    pool._atomic_npy = timed("write_file", pool._atomic_npy)
    pool._atomic_json = timed("write_file", pool._atomic_json)
    pool._ShardWrites._settle_oldest = timed("write", pool._ShardWrites._settle_oldest)
    real_index = pool.PoolStore.index

    def index(self, *a, **k):
        in_index["on"] = True
        t = time.perf_counter()
        try:
            return real_index(self, *a, **k)
        finally:
            parts["index"] += time.perf_counter() - t
            in_index["on"] = False

    pool.PoolStore.index = index
    shutil.rmtree(out, ignore_errors=True)

    c0, t0 = _cpu_s(), time.perf_counter()
    emb = load_embedder("static")
    parts["load_embedder"] = time.perf_counter() - t0
    emb.embed = timed("embed", emb.embed)
    store = pool.build_store(path, out, embedder=emb)
    total = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    n = store.n_rows
    named = sum(parts.values())
    parts["other"] = total - named
    return {"rows": n, "total_s": total, "rate": n / total, "cpu_s": cpu, "rate_without_index": n / (total - parts["index"]),
            "index_kind": json.loads((Path(out) / "index" / "euclidean.json").read_text())["kind"],
            "parts_s": parts, "index_parts_s": {**index_parts, "other": parts["index"] - sum(index_parts.values())},
            "background_write_s": background["write"],
            "peak_rss_mb": _peak_rss_mb(),
            "store_bytes": sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())}


def _busy_cpu_s() -> float | None:
    """CPU seconds used by every process on the machine so far (Linux /proc/stat), None elsewhere."""
    try:
        vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = vals
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _io_stall_s() -> float | None:
    """Seconds in which some task on the machine waited for I/O (Linux /proc/pressure/io), None elsewhere."""
    try:
        some = Path("/proc/pressure/io").read_text().splitlines()[0]
        return int(some.rsplit("total=", 1)[1]) / 1e6
    except (OSError, ValueError, IndexError):
        return None


def run_child(*args: str) -> dict:
    """Run one job in a fresh process; also record how much CPU other processes took meanwhile
    (machine-wide busy CPU minus the child's own), since that, not the code, moves wall-clock rates."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    io0 = _io_stall_s()
    busy0, own0, t0 = _busy_cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    busy1, own1, wall = _busy_cpu_s(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    io1 = _io_stall_s()
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args} failed with exit status {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if busy0 is not None and busy1 is not None:
        own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        result["other_processes_cores"] = max(0.0, (busy1 - busy0) - own) / wall
    if io0 is not None and io1 is not None:
        # the child's own fsyncs count here too; a build's usual figure is a few seconds at 1M, more means
        # the disk was slow or shared (the index save, an fsync of ~1 GB at 1M, then takes several times longer)
        result["io_stall_s"] = io1 - io0
    return result


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict:
    from importlib import metadata

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("numpy", "faiss-cpu", "tokenizers", "model2vec", "scipy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "none"
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = None
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpus_available": len(os.sched_getaffinity(0)), "memory_gib": mem, "versions": versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--formats", nargs="+", default=None, choices=["jsonl.gz", "jsonl"],
                    help="input formats (default: jsonl.gz, plus jsonl for sizes up to 100k)")
    ap.add_argument("--json", default=None, help="where to write results (default: results/build.json "
                    "for the default sizes, none otherwise)")
    ap.add_argument("--repeat", type=int, default=None, help="runs of each job, best kept (default: 3 up "
                    "to 100k rows, 2 above); embed and build runs alternate so load changes hit both alike")
    ap.add_argument("--keep-stores", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        job, *rest = a.child
        result = child_embed(*rest) if job == "embed" else child_build(*rest)
        print(json.dumps(result))
        return

    t_start = time.perf_counter()
    print("making sure the static model is built (once) ...", flush=True)
    subprocess.run([sys.executable, "-c", "from tsds.embed import load_embedder; load_embedder('static')"],
                   check=True, cwd=ROOT)
    rows = []
    inputs = {}
    for n in a.sizes:
        formats = a.formats or (["jsonl.gz", "jsonl"] if n <= 100_000 else ["jsonl.gz"])
        for fmt in formats:
            t = time.perf_counter()
            inputs[f"{n}.{fmt}"] = info = generate(n, fmt)
            print(f"input {info['file']}: {n:,} rows, {info['distinct_texts']:,} distinct, "
                  f"{info['bytes'] / 2**20:.0f} MiB ({time.perf_counter() - t:.1f}s)", flush=True)
        reps = a.repeat or (3 if n <= 100_000 else 2)
        embs, builds = [], {fmt: [] for fmt in formats}
        for rep in range(reps):
            e = run_child("embed", str(input_path(n, formats[0])))
            embs.append(e)
            print(f"  embed  {n:>9,} run {rep + 1}: {e['rate']:>8,.0f} texts/s  cpu {e['cpu_s']:.1f}s  "
                  f"peak {e['peak_rss_mb']:.0f} MiB  (other processes {e.get('other_processes_cores', 0):.2f} cores)",
                  flush=True)
            for fmt in formats:
                out = WORK / f"store-n{n}-{fmt.replace('.', '')}"
                b = run_child("build", str(input_path(n, fmt)), str(out))
                if not a.keep_stores:
                    shutil.rmtree(out, ignore_errors=True)
                b["load_avg_1min_after"] = os.getloadavg()[0]
                builds[fmt].append(b)
                print(f"  build  {n:>9,} {fmt:8} run {rep + 1}: {b['rate']:>8,.0f} texts/s  cpu {b['cpu_s']:.1f}s  "
                      f"index {b['parts_s']['index']:.1f}s (train {b['index_parts_s']['train']:.1f}, assign "
                      f"{b['index_parts_s']['assign']:.1f}, save {b['index_parts_s']['save']:.1f})  "
                      f"peak {b['peak_rss_mb']:.0f} MiB  (other processes {b.get('other_processes_cores', 0):.2f} cores, "
                      f"I/O stalls {b.get('io_stall_s', 0):.1f} s)",
                      flush=True)
        emb = max(embs, key=lambda r: r["rate"])
        for fmt in formats:
            b = max(builds[fmt], key=lambda r: r["rate"])
            rows.append({"rows": n, "format": fmt, "embedder": emb, "build": b,
                         "ratio": b["rate"] / emb["rate"],
                         "ratio_without_index": b["rate_without_index"] / emb["rate"],
                         "ratio_cpu_time": emb["cpu_s"] / b["cpu_s"],
                         "all_runs": {"embed_rates": [r["rate"] for r in embs],
                                      "build_rates": [r["rate"] for r in builds[fmt]]}})

    print()
    head = (f"{'rows':>9} {'input':8} {'embed/s':>8} {'build/s':>8} {'ratio':>5} {'no-idx':>6} "
            f"{'total s':>7} {'read':>5} {'hash':>5} {'embed':>6} {'write':>5} {'index':>5} {'other':>5} "
            f"{'idx':>4} {'cpu':>5} {'RSS emb':>7} {'RSS bld':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        b, p = r["build"], r["build"]["parts_s"]
        print(f"{r['rows']:>9,} {r['format']:8} {r['embedder']['rate']:>8,.0f} {b['rate']:>8,.0f} "
              f"{r['ratio']:>5.2f} {r['ratio_without_index']:>6.2f} {b['total_s']:>7.1f} "
              f"{p['read_parse']:>5.1f} {p['hash']:>5.1f} {p['embed']:>6.1f} {p['write']:>5.1f} "
              f"{p['index']:>5.1f} {p['other'] + p['load_embedder']:>5.1f} {b['index_kind']:>4} "
              f"{r['ratio_cpu_time']:>5.2f} "
              f"{r['embedder']['peak_rss_mb']:>6.0f}M {b['peak_rss_mb']:>6.0f}M")
    print("(best of the runs; times in s; 'ratio' = build rate / embedder rate, 'no-idx' = the same without the "
          "index;\n 'other' = loading the embedder + build_store's bookkeeping; 'cpu' = embed CPU s / build CPU s; "
          "RSS = peak of the child)")
    wall = time.perf_counter() - t_start
    print(f"benchmark wall time: {wall:.0f}s")

    target = a.json or (str(RESULTS) if sorted(a.sizes) == [100_000, 1_000_000] and a.formats is None else None)
    if target:
        doc = {"benchmark": "pool build (tsds.store.build_store, static embedder) vs embedder.embed",
               "target": "build rate >= 0.8 x embedder rate", "shard_rows": SHARD_ROWS,
               "machine": machine_info(), "load_avg_at_end": os.getloadavg(), "inputs": inputs, "results": rows, "wall_s": wall,
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
