#!/usr/bin/env python3
"""gather_corpus.py OUTFILE [--mb N]: collect a training corpus from text on this machine.

Sources (each file one document, deterministic order, nothing of it is committed):
  - C headers under /usr/include            (about 45% of the budget)
  - the Python standard library's .py files (about 45%), found through sysconfig
  - license texts under /usr/share/common-licenses and plain-text docs under
    /usr/share/doc (README*, *.md, *.txt, copyright; the rest)

Files are picked in a fixed pseudo-random order (sorted paths, shuffled by a hash of the
path), so the same machine gives the same corpus. Output: JSON lines {"text": ..., "src": ...}.
"""
import argparse
import hashlib
import json
import os
import sysconfig

MAX_FILE = 256 * 1024  # skip huge generated files


def walk(root, accept):
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            if accept(p) and os.path.isfile(p) and not os.path.islink(p):
                try:
                    if 64 <= os.path.getsize(p) <= MAX_FILE:
                        out.append(p)
                except OSError:
                    pass
    return sorted(out, key=lambda p: hashlib.sha1(p.encode()).hexdigest())


def read(p):
    try:
        with open(p, "rb") as fh:
            b = fh.read()
    except OSError:
        return None
    if b"\0" in b:
        return None
    t = b.decode("utf-8", errors="replace")
    return t if t.strip() else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=40.0, help="total size budget in MB")
    a = ap.parse_args()
    budget = int(a.mb * 1e6)
    stdlib = sysconfig.get_paths()["stdlib"]
    sources = [
        ("c", 0.45, walk("/usr/include", lambda p: p.endswith((".h", ".hpp")))),
        ("py", 0.45, walk(stdlib, lambda p: p.endswith(".py") and "site-packages" not in p)),
        ("text", 0.10,
         walk("/usr/share/common-licenses", lambda p: True) +
         walk("/usr/share/doc", lambda p: os.path.basename(p).lower().startswith(("readme", "copyright"))
              or p.endswith((".md", ".txt", ".rst")))),
    ]
    n_docs, total, stats = 0, 0, {}
    with open(a.out, "w", encoding="utf-8") as out:
        for name, share, paths in sources:
            got = 0
            for p in paths:
                if got >= share * budget:
                    break
                t = read(p)
                if t is None:
                    continue
                out.write(json.dumps({"text": t, "src": name}) + "\n")
                got += len(t.encode())
                n_docs += 1
            total += got
            stats[name] = {"bytes": got, "candidate_files": len(paths)}
            print(f"{name}: {got / 1e6:.1f} MB from {len(paths)} candidate files")
    print(f"{n_docs} documents, {total / 1e6:.1f} MB -> {a.out}")
    with open(os.path.join(os.path.dirname(os.path.abspath(a.out)), "corpus_stats.json"), "w") as fh:
        json.dump({"documents": n_docs, "bytes": total, "sources": stats,
                   "from": "C headers under /usr/include, the Python standard library, "
                           "/usr/share/common-licenses and /usr/share/doc text files"}, fh, indent=1)


if __name__ == "__main__":
    main()
