"""Rebuild the binary fixtures (gzip, Parquet, Arrow) from the text ones.

Run from anywhere with the project's venv: ``python tests/data/readers/regenerate.py``.
The Hugging Face directory needs the ``datasets`` package; it is kept in git so
that the tests do not.
"""

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
GZIPPED = ["good.jsonl", "bad.jsonl", "good.csv", "bad.csv", "good.tsv", "bad.tsv", "good.txt", "bad.txt"]


def records() -> list[dict]:
    return [json.loads(line) for line in (HERE / "good.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    for name in GZIPPED:
        data = (HERE / name).read_bytes()
        with open(HERE / f"{name}.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
    table = pa.Table.from_pylist(records())
    pq.write_table(table, HERE / "good.parquet", row_group_size=2)
    bad = pa.Table.from_pylist(
        [{"text": "fine row"}, {"text": None}, {"text": ""}, {"text": "another fine row"}],
        schema=pa.schema([("text", pa.string())]),
    )
    pq.write_table(bad, HERE / "bad.parquet")
    with pa.OSFile(str(HERE / "good.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    try:
        import datasets
    except ImportError:
        return
    target = HERE / "hf_dataset"
    shutil.rmtree(target, ignore_errors=True)
    datasets.Dataset.from_list(records()).save_to_disk(str(target), num_shards=2)


if __name__ == "__main__":
    main()
