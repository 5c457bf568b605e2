#!/usr/bin/env python3
"""Build the bundled real demo data set under data/demo/ from offline text sources.

Why: tsds needs a realistic, labelled candidate pool plus a few target tasks (query examples and
held-out sets) to demonstrate and benchmark task-specific data selection without network access.
Every text comes from a Debian or PyPI package that installs real reference text on disk.

Sources and what they need (install once, as root):

    apt-get update -o Acquire::Languages=en        # also fetches the Debian package descriptions
    apt-get install -y wordnet-base dict-gcide dict-foldoc fortunes fortunes-min
    pip install --target /tmp/cc chatterbot-corpus pyyaml   # any location; see --chatterbot-dir

  wordnet     /usr/share/wordnet/data.{noun,verb,adj,adv}     (wordnet-base, WordNet 3.0)
  gcide       /usr/share/dictd/gcide.{index,dict.dz}           (dict-gcide, Webster 1913 + additions)
  foldoc      /usr/share/dictd/foldoc.{index,dict.dz}          (dict-foldoc)
  fortunes    /usr/share/games/fortunes/*                      (fortunes, fortunes-min; not off/)
  debian      /var/lib/apt/lists/*bookworm_main_binary-amd64_Packages.lz4 and
              /var/lib/apt/lists/*bookworm_main_i18n_Translation-en.lz4, read with
              /usr/lib/apt/apt-helper cat-file (only the bookworm "main" suite is used, not
              -updates/-security, so the result only changes with a Debian point release)
  chatterbot  chatterbot_corpus/data/english/*.yml  (PyPI chatterbot-corpus; parsed with PyYAML,
              imported from --chatterbot-dir, /tmp/cc, or the running interpreter)

Only the standard library is used (plus PyYAML for the chatterbot YAML files). No tsds imports.

Output (all deterministic: fixed seed, sorted inputs, gzip with mtime=0):

  data/demo/pool.jsonl.gz                 candidate pool (~36k texts)
  data/demo/tasks/<task>/queries.jsonl    20 query examples of the task
  data/demo/tasks/<task>/heldout.jsonl.gz held-out evaluation examples of the task
  data/demo/manifest.json                 counts and sha256 of every file
  data/demo/README.md                     description, counts, labels, licences

Query and held-out texts are removed from the pool (texts are unique across all files).

Usage:  python scripts/build_demo_data.py [--out data/demo] [--chatterbot-dir /tmp/cc]

A larger pool of the same sources, for benchmarks (not committed; benchmarks/work/ is ignored by git):

    python scripts/build_demo_data.py --pool-size 200000 --out benchmarks/work/realpool

The tasks are carved out exactly as for the demo (same seed, same order), so its tasks/ files equal
data/demo/tasks byte for byte and none of their texts is in the larger pool. Each source's quota is the
demo's scaled to the requested size; a source with fewer texts gives all it has and its share goes to the
others in proportion to their quota. The task labels' floor is scaled by the same factor.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import subprocess
import sys

SEED = 20240611
MAX_CHARS = 600
MIN_CHARS = 20
GCIDE_MIN_TAG = 30  # GCIDE subject tags seen fewer times become label "other"
TASK_POOL_FLOOR = 800  # each task (source, label) member keeps up to this many texts in the pool

# Pool quota per source (before removing nothing: task examples are carved out first).
POOL_QUOTA = {
    "wordnet": 12000,
    "gcide": 9000,
    "foldoc": 4000,
    "fortunes": 5000,
    "debian": 5000,
    "chatterbot": 1500,
}

# Target tasks: name -> (description, list of (source, label) members, n_heldout).
TASKS = {
    "food": (
        "Food and cookery definitions: WordNet glosses of lexicographer class noun.food and "
        "GCIDE senses tagged (Cookery).",
        [("wordnet", "noun.food"), ("gcide", "Cookery")],
        300,
    ),
    "computing-networking": (
        "Computer networking terms: FOLDOC entries whose first subject tag is <networking> "
        "(the ~220 templated 'The country code for X.' stubs are dropped from the data).",
        [("foldoc", "networking")],
        200,
    ),
    "zoology": (
        "Zoology: GCIDE senses tagged (Zool.) and WordNet glosses of class noun.animal.",
        [("gcide", "Zool."), ("wordnet", "noun.animal")],
        400,
    ),
    "games": (
        "Games software: Debian package descriptions from Section: games.",
        [("debian", "games")],
        300,
    ),
    "science-quotes": (
        "Science quotations and jokes: the 'science' fortune cookie file.",
        [("fortunes", "science")],
        200,
    ),
}
N_QUERIES = 20

WORDNET_DIR = "/usr/share/wordnet"
DICTD_DIR = "/usr/share/dictd"
FORTUNE_DIR = "/usr/share/games/fortunes"
APT_LISTS = "/var/lib/apt/lists"
APT_HELPER = "/usr/lib/apt/apt-helper"

INSTALL_HINT = {
    "wordnet": "apt-get install -y wordnet-base",
    "gcide": "apt-get install -y dict-gcide",
    "foldoc": "apt-get install -y dict-foldoc",
    "fortunes": "apt-get install -y fortunes fortunes-min",
    "debian": "apt-get update -o Acquire::Languages=en",
    "chatterbot": "pip install --target /tmp/cc chatterbot-corpus pyyaml  (then --chatterbot-dir /tmp/cc)",
}

# WordNet 3.0 lexicographer file numbers (lexnames).
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]

LICENCES = {
    "wordnet": ("wordnet-base", "WordNet 3.0 licence (Princeton University; permissive, BSD-like: use, "
                "copy, modify and distribute for any purpose, keeping the copyright notice)"),
    "gcide": ("dict-gcide", "GNU GPL version 2 or later (GCIDE, derived from Webster's 1913 "
              "Revised Unabridged Dictionary and WordNet)"),
    "foldoc": ("dict-foldoc", "GNU Free Documentation License 1.1 or later, no invariant sections "
               "(FOLDOC, (c) Denis Howe; cite as 'The Free On-line Dictionary of Computing, "
               "http://foldoc.org/, Editor Denis Howe')"),
    "fortunes": ("fortunes", "BSD licence (fortune-mod, (c) 1991 The Regents of the University of "
                 "California; advertising clause deleted); the data files are collected quotations "
                 "distributed with it"),
    "debian": ("apt lists", "Each package's description is part of that package and falls under "
               "its own (DFSG-free, Debian main) licence; short descriptive text"),
    "chatterbot": ("chatterbot-corpus 1.3.3 (PyPI)", "BSD (PyPI classifier 'License :: OSI Approved :: "
                   "BSD License'; the project, by Gunther Cox, is described as BSD-3-Clause; the wheel "
                   "ships no licence file, so only the classifier was verified on disk)"),
}


class MissingSource(Exception):
    pass


def need(path: str, source: str) -> str:
    if not os.path.exists(path):
        raise MissingSource(f"source '{source}' missing: {path} not found. Install with: {INSTALL_HINT[source]}")
    return path


# ----------------------------------------------------------------------------- text helpers

_WS = re.compile(r"\s+")


def clean_ws(s: str) -> str:
    return _WS.sub(" ", s).strip()


def truncate(s: str, n: int = MAX_CHARS) -> str:
    if len(s) <= n:
        return s
    cut = s[:n]
    sp = cut.rfind(" ")
    if sp > n * 0.6:
        cut = cut[:sp]
    return cut.rstrip(" ,;:") + " ..."


def decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("cp1252", errors="replace")


# ----------------------------------------------------------------------------- WordNet

def load_wordnet() -> list[dict]:
    out = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = need(os.path.join(WORDNET_DIR, f"data.{pos}"), "wordnet")
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # licence header
                head, gloss = line.split("|", 1)
                parts = head.split()
                offset, lexfile, w_cnt = parts[0], int(parts[1]), int(parts[3], 16)
                words = [parts[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
                words = [re.sub(r"\((a|p|ip)\)$", "", w) for w in words]
                gloss = clean_ws(gloss)
                out.append({
                    "source": "wordnet",
                    "label": LEXNAMES[lexfile],
                    "term": words[0],
                    "synonyms": words[1:],
                    "synset": f"{offset}-{head.split()[2]}",
                    "body": gloss,
                })
    return out


# ----------------------------------------------------------------------------- dictd helpers

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


def dictd_entries(name: str, source: str) -> list[tuple[str, str]]:
    """Return (headword, entry text) per distinct entry (deduplicated by offset), in file order."""
    index = need(os.path.join(DICTD_DIR, f"{name}.index"), source)
    data = gzip.open(need(os.path.join(DICTD_DIR, f"{name}.dict.dz"), source)).read()
    seen = {}
    with open(index, encoding="utf-8", errors="replace") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3 or cols[0].startswith("00-database") or cols[0].startswith("00database"):
                continue
            off, ln = _b64num(cols[1]), _b64num(cols[2])
            if off not in seen:
                seen[off] = (cols[0], ln)
    return [(hw, decode(data[off:off + ln])) for off, (hw, ln) in sorted(seen.items())]


# ----------------------------------------------------------------------------- GCIDE

_GC_MARK = re.compile(r"^\s*\[[^\]]*\]\s*$")  # e.g. [1913 Webster], [PJC]
_GC_SRC = re.compile(r"\[(?:1913 Webster|Webster 1913|PJC|WordNet|Century|Chambers|Cent\. Dict\.)[^\]]*\]")
_GC_CHAR = re.compile(r"\[[=^.~\"`'\-]?([a-z]{1,2})[=^.~\"`'\-]?\]")
_GC_TAG = re.compile(r"^\(([A-Za-z][A-Za-z. &]{1,30}?)\)[,.;:]?\s*")
_GC_SENSE = re.compile(r"^ {3}(\d+\.|\([a-z]\))\s")
_GC_SUB = re.compile(r"^ {3,}\([a-z]\)\s")
_GC_PHRASE = re.compile(r"^ {3}\{")


def _norm_tag(t: str) -> str:
    t = clean_ws(t)
    return t[0].upper() + t[1:]


def _gc_clean(s: str) -> str:
    s = _GC_SRC.sub(" ", s)
    s = _GC_CHAR.sub(r"\1", s)
    s = s.replace("{", "").replace("}", "")
    return clean_ws(s)


def _split_header(entry: str) -> tuple[str, str]:
    depth = 0
    for i, c in enumerate(entry):
        if c == "[":
            depth += 1
        elif c == "]":
            depth = max(0, depth - 1)
        elif c == "\n" and depth == 0:
            return entry[:i], entry[i + 1:]
    return entry, ""


def load_gcide() -> list[dict]:
    out = []
    for hw, entry in dictd_entries("gcide", "gcide"):
        header, body = _split_header(entry)
        hdr = re.sub(r"\[[^\[\]]*\]", "", re.sub(r"\[[^\[\]]*\]", "", header))  # drop (nested) brackets
        m = re.search(r"\(([A-Z][A-Za-z. &]{1,30}?)\)\s*$", hdr.strip())
        entry_tag = _norm_tag(m.group(1)) if m else None
        word = clean_ws(header.split("\\", 1)[0]) or hw
        senses = []  # (headword, tag, lines)
        cur = None
        pending_tag = None
        lines = body.split("\n")
        for j, line in enumerate(lines):
            if not line.strip():
                cur = None if cur is None or cur[2] else cur
                continue
            if _GC_MARK.match(line):
                cur = None
                continue
            after_gap = j == 0 or not lines[j - 1].strip() or _GC_MARK.match(lines[j - 1])
            start = j == 0 or (after_gap and (_GC_SENSE.match(line) or _GC_PHRASE.match(line))) or (
                _GC_SUB.match(line) and pending_tag is not None)
            if start:
                cur = [word, None, [line]]
                senses.append(cur)
            elif cur is not None:
                if line.lstrip().startswith("--") or len(line) - len(line.lstrip()) >= 9:
                    cur = None  # quotation / citation
                else:
                    cur[2].append(line)
            if start and _GC_SUB.match(line) is None:
                pending_tag = None
            # remember a tag-only numbered sense like "6. (Law)" for its lettered subsenses
            if start and _GC_SENSE.match(line):
                t = re.sub(r"^\s*\d+\.\s*", "", line).strip()
                mm = re.fullmatch(r"\(([A-Za-z][A-Za-z. &]{1,30}?)\)", t)
                if mm:
                    pending_tag = _norm_tag(mm.group(1))
        for hword, _, ls in senses:
            raw = "\n".join(ls)
            text = clean_ws(raw)
            if text.startswith("Note:") or text.startswith("Syn:") or text.startswith("["):
                continue
            term = hword
            tag = None
            if text.startswith("{"):
                mph = re.match(r"\{([^{}]+)\}(?:,? or \{[^{}]+\})?\s*", text)
                if not mph:
                    continue
                term = mph.group(1)
                text = text[mph.end():]
                mt = _GC_TAG.match(text)
                if mt:
                    tag = _norm_tag(mt.group(1))
                    text = text[mt.end():]
                text = text.lstrip(",;: ")
            else:
                text = re.sub(r"^(\d+\.|\([a-z]\))\s*", "", text)
                for _ in range(2):
                    mt = _GC_TAG.match(text)
                    if mt and tag is None:
                        tag = _norm_tag(mt.group(1))
                        text = text[mt.end():]
                    text = re.sub(r"^(\d+\.|\([a-z]\))\s*", "", text)
                if tag is None:
                    tag = entry_tag if entry_tag else pending_tag
            text = _gc_clean(text)
            if len(text) < MIN_CHARS or re.match(r"^(See|Same as|Imp\.|p\. p\.|pl\. of|Obs\.)\b", text):
                continue
            if "\\" in text:
                continue  # leftover pronunciation markup
            senses_rec = {
                "source": "gcide",
                "label": tag or "none",
                "term": clean_ws(term),
                "body": text,
            }
            out.append(senses_rec)
    # Rare or misspelt tags ("Bot. & Zol.", "Falconary", ...) are folded into "other"; the raw tag is
    # kept in `subject`.
    counts = collections.Counter(r["label"] for r in out)
    for r in out:
        if r["label"] != "none" and counts[r["label"]] < GCIDE_MIN_TAG:
            r["subject"] = r["label"]
            r["label"] = "other"
    return out


# ----------------------------------------------------------------------------- FOLDOC

def load_foldoc() -> list[dict]:
    out = []
    for hw, entry in dictd_entries("foldoc", "foldoc"):
        lines = entry.split("\n")
        heads = []
        i = 0
        while i < len(lines) and lines[i].strip() and not lines[i].startswith(" "):
            heads.append(lines[i].strip())
            i += 1
        body = "\n".join(lines[i:]).strip()
        if not body:
            continue
        m = re.match(r"<([^<>]+)>\s*", body)
        tags = []
        if m:
            tags = [clean_ws(t) for t in m.group(1).split(",") if t.strip()]
            body = body[m.end():]
        # drop the trailing "(YYYY-MM-DD)" and cross-reference braces
        text = re.sub(r"\(\d{4}-\d{2}-\d{2}\)\s*$", "", body.strip())
        text = re.sub(r"\{([^{}]*?)(?: \([^(){}]*\))?\}", r"\1", text)
        text = clean_ws(text)
        if len(text) < MIN_CHARS or text.startswith("See ") and len(text) < 60:
            continue
        if re.match(r"The country code for ", text):
            continue  # ~250 templated one-line ccTLD stubs tagged <networking>
        out.append({
            "source": "foldoc",
            "label": tags[0] if tags else "none",
            "tags": tags,
            "term": heads[0] if heads else hw,
            "body": text,
        })
    return out


# ----------------------------------------------------------------------------- fortunes

def load_fortunes() -> list[dict]:
    need(FORTUNE_DIR, "fortunes")
    files = sorted(
        p for p in glob.glob(os.path.join(FORTUNE_DIR, "*"))
        if os.path.isfile(p) and not os.path.islink(p) and not p.endswith(".dat")
    )
    if not files:
        raise MissingSource(f"source 'fortunes' missing: no files in {FORTUNE_DIR}. Install with: "
                            + INSTALL_HINT["fortunes"])
    out = []
    for p in files:
        cat = os.path.basename(p)
        if cat in ("ascii-art", "translate-me"):
            continue  # ASCII drawings / non-English
        with open(p, "rb") as f:
            raw = decode(f.read())
        for chunk in re.split(r"\n%\n", "\n" + raw + "\n"):
            lines = [ln.rstrip() for ln in chunk.strip("\n").split("\n")]
            text = "\n".join(lines).strip()
            text = re.sub(r"[ \t]+", " ", text)
            text = re.sub(r"\n{2,}", "\n", text)
            if len(text) < MIN_CHARS:
                continue
            out.append({"source": "fortunes", "label": cat, "body": text})
    return out


# ----------------------------------------------------------------------------- Debian

def _apt_cat(pattern: str) -> str:
    paths = sorted(glob.glob(os.path.join(APT_LISTS, pattern)))
    if not paths:
        raise MissingSource(f"source 'debian' missing: no {APT_LISTS}/{pattern}. Run: {INSTALL_HINT['debian']}")
    p = paths[0]
    if p.endswith(".lz4"):
        if not os.path.exists(APT_HELPER):
            raise MissingSource(f"source 'debian': {APT_HELPER} not found (needed to read {p})")
        return subprocess.run([APT_HELPER, "cat-file", p], check=True, capture_output=True).stdout.decode(
            "utf-8", errors="replace")
    with open(p, encoding="utf-8", errors="replace") as f:
        return f.read()


def _deb822(text: str):
    for para in text.split("\n\n"):
        rec = {}
        key = None
        for line in para.split("\n"):
            if not line:
                continue
            if line[0] in " \t" and key:
                rec[key] += "\n" + line
            elif ":" in line:
                key, val = line.split(":", 1)
                rec[key] = val.strip()
        if rec:
            yield rec


def load_debian() -> list[dict]:
    pk = _apt_cat("*debian_dists_bookworm_main_binary-amd64_Packages*")
    tr = _apt_cat("*debian_dists_bookworm_main_i18n_Translation-en*")
    long_desc = {}
    for rec in _deb822(tr):
        if "Description-md5" in rec and "Description-en" in rec:
            long_desc[rec["Description-md5"]] = rec["Description-en"]
    out = []
    seen = set()
    for rec in _deb822(pk):
        name = rec.get("Package")
        if not name or name in seen:
            continue
        seen.add(name)
        desc = long_desc.get(rec.get("Description-md5", ""), rec.get("Description", ""))
        if not desc:
            continue
        short, _, rest = desc.partition("\n")
        paras = []
        for ln in rest.split("\n"):
            ln = ln.strip()
            if ln == ".":
                paras.append("\n")
            elif ln:
                paras.append(ln)
        long = clean_ws(" ".join(paras).replace(" \n ", "\n"))
        short = short.strip()
        text = short.rstrip(".") + ". " + long if long else short
        section = rec.get("Section", "none").split("/")[-1]
        out.append({"source": "debian", "label": section, "term": name, "body": text})
    return out


# ----------------------------------------------------------------------------- chatterbot

def _find_chatterbot(extra: str | None) -> str:
    cands = []
    if extra:
        cands.append(extra)
    cands += ["/tmp/cc"]
    for c in cands:
        if c and os.path.isdir(os.path.join(c, "chatterbot_corpus")) and c not in sys.path:
            sys.path.insert(0, c)
    try:
        import chatterbot_corpus  # type: ignore
    except ImportError:
        raise MissingSource("source 'chatterbot' missing: cannot import chatterbot_corpus. Install with: "
                            + INSTALL_HINT["chatterbot"])
    d = os.path.join(os.path.dirname(chatterbot_corpus.__file__), "data", "english")
    return need(d, "chatterbot")


def load_chatterbot(extra: str | None) -> list[dict]:
    d = _find_chatterbot(extra)
    try:
        import yaml  # type: ignore
    except ImportError:
        raise MissingSource("source 'chatterbot' needs PyYAML: " + INSTALL_HINT["chatterbot"])
    out = []
    for p in sorted(glob.glob(os.path.join(d, "*.yml"))):
        with open(p, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        cat = (doc.get("categories") or [os.path.splitext(os.path.basename(p))[0]])[0]
        for conv in doc.get("conversations") or []:
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if len(turns) < 2:
                continue
            text = "\n".join(turns)
            out.append({"source": "chatterbot", "label": str(cat), "body": text})
    return out


# ----------------------------------------------------------------------------- assembly

def finalize(recs: list[dict]) -> list[dict]:
    """Assign ids, build `text`, truncate; ids number the parsed records of each source in order."""
    out = []
    for i, r in enumerate(recs):
        body = r.pop("body")
        term = r.get("term")
        if r["source"] in ("wordnet", "gcide", "foldoc", "debian") and term:
            text = f"{term}: {body}"
        else:
            text = body
        text = truncate(text.replace("\ufffd", "").strip())  # drop undecodable bytes
        rec = {"id": f"{r['source']}-{i:06d}", "text": text, "source": r["source"], "label": r["label"]}
        for k, v in r.items():
            if k not in rec and v not in (None, [], ""):
                rec[k] = v
        out.append(rec)
    return out


def allocate(sizes: dict[str, int], quota: int, floors: dict[str, int]) -> dict[str, int]:
    """Per-label sample sizes: floors first, then the rest of the quota in proportion to sqrt(size).

    The square root keeps every label visible while large labels stay larger, so the pool has a
    good label mix without being uniform over labels.
    """
    alloc = {k: min(n, floors.get(k, 0)) for k, n in sizes.items()}
    left = quota - sum(alloc.values())
    open_ = {k for k in sizes if alloc[k] < sizes[k]}
    while left > 0 and open_:
        w = {k: sizes[k] ** 0.5 for k in open_}
        tot = sum(w.values())
        share = {k: int(left * w[k] / tot) for k in sorted(open_)}
        if not any(share.values()):
            for k in sorted(open_, key=lambda k: (-w[k], k))[:left]:
                share[k] = 1
        given = 0
        for k in sorted(open_):
            add = min(share[k], sizes[k] - alloc[k])
            alloc[k] += add
            given += add
        left -= given
        open_ = {k for k in open_ if alloc[k] < sizes[k]}
        if given == 0:
            break
    return alloc


def scale_quotas(available: dict[str, int], total: int) -> dict[str, int]:
    """Per-source quotas summing to ``total``: POOL_QUOTA scaled, each capped at what the source has.

    Water-filling: sources that run out give their share to the others in proportion to their quota;
    the integer remainder goes one text at a time to the sources with room, in name order.
    """
    if total > sum(available.values()):
        raise ValueError(f"--pool-size {total} exceeds the {sum(available.values())} texts available")
    quota: dict[str, int] = {}
    open_ = set(available)
    left = total
    while open_:
        t = left / sum(POOL_QUOTA[n] for n in open_)
        full = {n for n in open_ if POOL_QUOTA[n] * t >= available[n]}
        if not full:
            break
        for n in sorted(full):
            quota[n] = available[n]
            left -= available[n]
        open_ -= full
    for n in sorted(open_):
        quota[n] = int(POOL_QUOTA[n] * t)
    left = total - sum(quota.values())
    while left > 0:
        for n in sorted(open_):
            if left and quota[n] < available[n]:
                quota[n] += 1
                left -= 1
    return {n: quota[n] for n in available}


def write_jsonl(path: str, recs: list[dict], gz: bool) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in recs).encode("utf-8")
    if gz:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
            g.write(data)
        data = buf.getvalue()
    with open(path, "wb") as f:
        f.write(data)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo"))
    ap.add_argument("--chatterbot-dir", default=os.environ.get("CHATTERBOT_DIR"))
    ap.add_argument("--pool-size", type=int, default=None,
                    help="build a larger pool of this many texts (same tasks; quotas and task floors scaled); "
                         "default: the demo pool's quotas")
    args = ap.parse_args()
    if args.pool_size is not None and args.pool_size < 1:
        print(f"ERROR: --pool-size must be a positive number of texts, got {args.pool_size}", file=sys.stderr)
        return 2
    out_dir = os.path.normpath(args.out)

    loaders = [
        ("wordnet", load_wordnet),
        ("gcide", load_gcide),
        ("foldoc", load_foldoc),
        ("fortunes", load_fortunes),
        ("debian", load_debian),
        ("chatterbot", lambda: load_chatterbot(args.chatterbot_dir)),
    ]
    all_recs: dict[str, list[dict]] = {}
    missing = []
    for name, fn in loaders:
        try:
            all_recs[name] = finalize(fn())
        except MissingSource as e:
            missing.append(str(e))
    if missing:
        print("ERROR: required sources are missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        print("Install them (see the top of this script) and re-run.", file=sys.stderr)
        return 2

    # Global exact-duplicate removal on text (first occurrence in source order wins).
    seen = set()
    uniq: dict[str, list[dict]] = {}
    for name, _ in loaders:
        keep = []
        for r in all_recs[name]:
            key = r["text"]
            if len(key) < MIN_CHARS or key in seen:
                continue
            seen.add(key)
            keep.append(r)
        uniq[name] = keep
        print(f"parsed {name:10s} {len(all_recs[name]):7d} records, {len(keep):7d} unique texts")

    rng = random.Random(SEED)

    # Carve out the task query and held-out examples before sampling the pool.
    taken: set[str] = set()
    task_sets = {}
    for task, (desc, members, n_held) in TASKS.items():
        cands = [r for name, _ in loaders for r in uniq[name] if (r["source"], r["label"]) in set(members)]
        cands = [r for r in cands if r["id"] not in taken]
        cands.sort(key=lambda r: r["id"])
        rng.shuffle(cands)
        good = [r for r in cands if 40 <= len(r["text"]) <= 400]
        # queries: spread over the member (source, label) groups in proportion to their size
        queries = []
        per = collections.Counter((r["source"], r["label"]) for r in cands)
        for m in members:
            k = round(N_QUERIES * per[m] / max(1, len(cands)))
            queries += [r for r in good if (r["source"], r["label"]) == m][:k]
        if len(queries) < N_QUERIES:
            ids = {r["id"] for r in queries}
            queries += [r for r in good if r["id"] not in ids][:N_QUERIES - len(queries)]
        queries = sorted(queries[:N_QUERIES], key=lambda r: r["id"])
        qids = {r["id"] for r in queries}
        held = sorted([r for r in cands if r["id"] not in qids][:n_held], key=lambda r: r["id"])
        for r in queries + held:
            taken.add(r["id"])
        task_sets[task] = (queries, held, len(cands))

    # Pool: per-source quota; task labels get a floor, the rest is spread over labels by sqrt(size).
    quotas, floor = POOL_QUOTA, TASK_POOL_FLOOR
    if args.pool_size is not None:
        avail = {n: sum(1 for r in uniq[n] if r["id"] not in taken) for n, _ in loaders}
        try:
            quotas = scale_quotas(avail, args.pool_size)
        except ValueError as e:
            print(f"ERROR: {e}", file=sys.stderr)
            return 2
        floor = round(TASK_POOL_FLOOR * args.pool_size / sum(POOL_QUOTA.values()))
    pool = []
    pool_stats = {}
    for name, _ in loaders:
        by_label = collections.defaultdict(list)
        for r in uniq[name]:
            if r["id"] not in taken:
                by_label[r["label"]].append(r)
        floors = {lab: floor for members in (t[1] for t in TASKS.values())
                  for src, lab in members if src == name}
        alloc = allocate({k: len(v) for k, v in by_label.items()}, quotas[name], floors)
        chosen = []
        for lab in sorted(by_label):
            items = by_label[lab]
            rng.shuffle(items)
            chosen += items[:alloc[lab]]
        chosen.sort(key=lambda r: r["id"])
        pool += chosen
        pool_stats[name] = {"records": len(chosen), "available": sum(len(v) for v in by_label.values()),
                            "labels": dict(sorted(collections.Counter(r["label"] for r in chosen).items()))}
    # Mix the sources (deterministically) so the pool file is not grouped by source.
    rng.shuffle(pool)

    # Sanity: disjointness of texts.
    pool_texts = {r["text"] for r in pool}
    assert len(pool_texts) == len(pool)
    for task, (q, h, _) in task_sets.items():
        assert not pool_texts & {r["text"] for r in q + h}, task
        assert not {r["text"] for r in q} & {r["text"] for r in h}, task

    # Write files.
    files = {}
    p = os.path.join(out_dir, "pool.jsonl.gz")
    write_jsonl(p, pool, gz=True)
    files["pool.jsonl.gz"] = p
    task_stats = {}
    for task, (q, h, n_cands) in task_sets.items():
        members = TASKS[task][1]
        qp = os.path.join(out_dir, "tasks", task, "queries.jsonl")
        hp = os.path.join(out_dir, "tasks", task, "heldout.jsonl.gz")
        write_jsonl(qp, q, gz=False)
        write_jsonl(hp, h, gz=True)
        files[f"tasks/{task}/queries.jsonl"] = qp
        files[f"tasks/{task}/heldout.jsonl.gz"] = hp
        in_pool = sum(1 for r in pool if (r["source"], r["label"]) in set(members))
        task_stats[task] = {
            "description": TASKS[task][0],
            "labels": [{"source": s, "label": lab} for s, lab in members],
            "queries": len(q),
            "heldout": len(h),
            "in_pool": in_pool,
            "available": n_cands,
            "queries_by_label": dict(sorted(collections.Counter(f"{r['source']}:{r['label']}" for r in q).items())),
            "heldout_by_label": dict(sorted(collections.Counter(f"{r['source']}:{r['label']}" for r in h).items())),
        }

    src_counts = {n: pool_stats[n]["records"] for n, _ in loaders}
    print(f"\npool: {len(pool)} texts")
    for n, c in src_counts.items():
        labs = pool_stats[n]["labels"]
        print(f"  {n:10s} {c:6d} texts, {len(labs):3d} labels (of {pool_stats[n]['available']} available)")
    print("\ntasks:")
    for t, s in task_stats.items():
        print(f"  {t:22s} queries {s['queries']:3d}  heldout {s['heldout']:4d}  same-label texts in pool {s['in_pool']:5d}")

    readme = os.path.join(out_dir, "README.md")
    with open(readme, "w", encoding="utf-8") as f:
        f.write(render_readme(len(pool), pool_stats, task_stats))

    manifest = {
        "generator": "scripts/build_demo_data.py",
        "seed": SEED,
        "max_chars": MAX_CHARS,
        "pool": {"total": len(pool), "by_source": src_counts,
                 "by_source_label": {n: pool_stats[n]["labels"] for n, _ in loaders}},
        "tasks": task_stats,
        **({"pool_size": {"requested": args.pool_size, "quota": quotas, "task_floor": floor}}
           if args.pool_size is not None else {}),
        "licences": {n: {"package": LICENCES[n][0], "licence": LICENCES[n][1]} for n, _ in loaders},
        "files": {},
    }
    files["README.md"] = readme
    for rel, path in sorted(files.items()):
        manifest["files"][rel] = {"bytes": os.path.getsize(path), "sha256": sha256(path)}
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(p) for p in files.values())
    print(f"\nwrote {len(files) + 1} files to {out_dir} ({total / 1e6:.2f} MB)")
    return 0


def render_readme(n_pool: int, pool_stats: dict, task_stats: dict) -> str:
    L = []
    L.append("# Demo data: real texts for task-specific data selection\n")
    L.append("Built by `scripts/build_demo_data.py` from offline text sources installed from Debian and PyPI "
             "packages (no network at build time). Rebuild with:\n")
    L.append("```sh\napt-get update -o Acquire::Languages=en\n"
             "apt-get install -y wordnet-base dict-gcide dict-foldoc fortunes fortunes-min\n"
             "pip install --target /tmp/cc chatterbot-corpus pyyaml\n"
             "python scripts/build_demo_data.py            # add --chatterbot-dir DIR if not /tmp/cc\n```\n")
    L.append("The build is deterministic (fixed seed, gzip mtime 0): re-running on the same package versions "
             "gives byte-identical files (sha256 in `manifest.json`). The Debian descriptions come from the "
             "bookworm `main` lists only, so they change only with a Debian point release.\n")
    L.append("## Files\n")
    L.append("| file | content |\n|---|---|")
    L.append(f"| `pool.jsonl.gz` | candidate pool, {n_pool} texts mixed from six sources (shuffled) |")
    L.append("| `tasks/<task>/queries.jsonl` | 20 example texts of the target task (the selection query) |")
    L.append("| `tasks/<task>/heldout.jsonl.gz` | held-out evaluation texts of the same task |")
    L.append("| `manifest.json` | counts per source, label and task; sha256 and size of every file |")
    L.append("| `README.md` | this file |\n")
    L.append("Every line is one JSON object with `id` (unique across all files, `<source>-<n>`), `text` "
             "(what to embed / train on; at most ~600 characters, longer texts are cut at a word boundary "
             "and end in ` ...`), `source`, `label` (domain/category), and where natural: `term` (headword "
             "or package name), `synonyms`, `synset` (WordNet offset-pos), `tags` (all FOLDOC tags), "
             f"`subject` (the raw GCIDE tag where a tag seen fewer than {GCIDE_MIN_TAG} times was folded into "
             "label `other`). "
             "Dictionary and package texts read `term: definition`; subject tags such as `(Zool.)` or "
             "`<networking>` are removed from the text and kept as `label`. Empty and exact-duplicate texts "
             "are dropped; query and held-out texts never occur in the pool.\n")
    L.append("## Pool\n")
    L.append("Each source gets a quota. Within a source, each task label first keeps up to "
             f"{TASK_POOL_FLOOR} texts (after its queries and held-out texts were taken out); the rest of the "
             "quota is shared over all labels in proportion to the square root of their size, so every "
             "label is represented and very large labels do not dominate.\n")
    L.append("| source | texts | labels | available (unique, not in tasks) | largest labels |\n"
             "|---|---:|---:|---:|---|")
    for n, s in pool_stats.items():
        top = sorted(s["labels"].items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        L.append(f"| {n} | {s['records']} | {len(s['labels'])} | {s['available']} | "
                 + ", ".join(f"{k} ({v})" for k, v in top) + " |")
    L.append(f"| **total** | **{n_pool}** | | | |\n")
    L.append("Labels: wordnet = lexicographer class (`noun.food`, `verb.motion`, ...); gcide = subject tag "
             "(`Zool.`, `Bot.`, `Law`, ...; `none` when the sense has no tag); foldoc = first `<tag>` of the "
             "entry (`networking`, `programming`, ...; `none` when untagged); fortunes = cookie file "
             "(`science`, `computers`, ...); debian = archive section (`games`, `science`, `libs`, ...); "
             "chatterbot = corpus category (`food`, `science`, ...). Full per-label counts are in "
             "`manifest.json`.\n")
    L.append("## Tasks\n")
    L.append("A text belongs to a task when its (source, label) is one of the task's members.\n")
    L.append("| task | members (source:label) | queries | held-out | same-label texts left in pool |\n"
             "|---|---|---:|---:|---:|")
    for t, s in task_stats.items():
        mem = ", ".join(f"{m['source']}:{m['label']}" for m in s["labels"])
        L.append(f"| `{t}` | {mem} | {s['queries']} | {s['heldout']} | {s['in_pool']} |")
    L.append("")
    for t, s in task_stats.items():
        L.append(f"- `{t}`: {s['description']} Queries by label: "
                 + ", ".join(f"{k} {v}" for k, v in s["queries_by_label"].items()) + "; held-out by label: "
                 + ", ".join(f"{k} {v}" for k, v in s["heldout_by_label"].items()) + ".")
    L.append("")
    L.append("Queries are texts of 40-400 characters, spread over the members in proportion to their size; "
             "held-out texts are a random sample of the remaining members. Labels are the sources' own "
             "annotations, so they are noisy (e.g. some `noun.food` glosses describe plants; many food words "
             "in GCIDE carry no tag and sit under `none`).\n")
    L.append("## Sources and licences\n")
    L.append("Checked against the copyright files installed on disk (`/usr/share/doc/<package>/copyright`) and "
             "the PyPI metadata.\n")
    L.append("| source | package | licence |\n|---|---|---|")
    for n, (pkg, lic) in LICENCES.items():
        L.append(f"| {n} | {pkg} | {lic} |")
    L.append("")
    L.append("Redistribution of the derived files follows each source's terms: the GCIDE portion is GPL-2+, "
             "the FOLDOC portion GFDL; keep this README (attribution and licence notes) with the data.\n")
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())
