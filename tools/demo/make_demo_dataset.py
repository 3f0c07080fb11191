#!/usr/bin/env python3
"""make_demo_dataset.py OUTFILE: the demo dataset, made at run time from this repository's
own text (standard library only; nothing third-party, nothing committed).

Every source, documentation, SQL, shell and test file of the repository (README.md,
docs/, engine/, ext/, cuda/, sql/, scripts/, tests/, tools/, bench/, examples/) is one
document: a JSON line {"text": <the file>, "path": <its path>}, in sorted path order, so
`document` in top_examples is the line of this file and the path says which file it is.
Build outputs, hidden directories and data files (JSON, safetensors...) are left out.
About 200k tokens with the bundled tokenizer.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIRS = ("docs", "engine", "ext", "cuda", "sql", "scripts", "tests", "tools", "bench", "examples")
EXTS = (".c", ".h", ".cu", ".cuh", ".md", ".sql", ".py", ".sh", ".txt", ".cmake")
SKIP = ("build", "__pycache__")


def files(root=ROOT):
    out = [p for p in ("README.md", "CMakeLists.txt") if os.path.isfile(os.path.join(root, p))]
    for d in DIRS:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, d)):
            dirnames[:] = sorted(x for x in dirnames if not x.startswith(".") and not x.startswith(SKIP))
            for f in filenames:
                if f.endswith(EXTS) or f == "CMakeLists.txt":
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(set(out))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    n, size = 0, 0
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for rel in files():
            with open(os.path.join(ROOT, rel), "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
            if not text.strip():
                continue
            fh.write(json.dumps({"text": text, "path": rel}, ensure_ascii=False) + "\n")
            n += 1
            size += len(text)
    print("%d documents, %d characters -> %s" % (n, size, out))


if __name__ == "__main__":
    main()
