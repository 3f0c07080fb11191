#!/usr/bin/env python3
"""test_gui.py: the Datasette pages of a saelite database, loaded in headless Chromium.

Builds a database with three extractions: the planted language model
(tests/fixtures/make_lm_fixtures.py: byte b fires feature b mod 32 with strength
s(b)), the bundled tiny GPT-2 + SAE on one document, and, the default one, the
planted activations (tests/fixtures/make_fixtures.py: feature j fires exactly on
token j with a known strength, feature 15 is dead; expected.json holds every row,
computed in Python from the raw inputs). Labels feature 2, sets a dense threshold,
serves the database with scripts/gui.sh (Datasette from .venv-gui, the extension
loaded, read-only connections) on a free localhost port, loads each page with
`chromium --headless --dump-dom` and checks what it shows against values computed
here from the fixture files: the feature list and its filters; a feature page's
statistics, quantiles, histogram, logit lens and highlighted top examples (which
tokens are marked, with which activation, HTML-escaped text); the examples, density
and probe pages; clear messages for bad parameters; markup that is not the pages'
own shown as text; extract_features and load_extension refused; the same answers
from concurrent requests (Datasette's thread pool, one catalog per connection).
Variants of a page already loaded in Chromium are read from the server's HTML.

    python3 test_gui.py --sqlite3 SHELL --ext BUILD/saelite --fixtures BUILD/fixtures --tmp DIR
    python3 test_gui.py --screenshots docs/screenshots --db build/demo.db --ext build/saelite

The second form serves an existing database (the demo) and writes a PNG of each page.
Chromium and Datasette missing is a failure that says how to install them.
"""
import argparse
import concurrent.futures
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "sql"))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import harness as h  # noqa: E402
from harness import check, check_equal  # noqa: E402
import make_lm_fixtures as lmfix  # noqa: E402
import safetensors_io as st  # noqa: E402

GUI_SH = os.path.join(ROOT, "scripts", "gui.sh")
INSTALL = "run scripts/install-deps.sh (it installs Debian's chromium and Datasette into .venv-gui)"
ARGS = None
SERVER = {}  # url, proc, log, db_name


# -------------------------------------------------------------------------------------
# Setup: arguments, tools, the planted database, the server
# -------------------------------------------------------------------------------------
def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--sqlite3", default="sqlite3")
    ap.add_argument("--ext", required=True, help="the extension, without .so")
    ap.add_argument("--fixtures", help="the fixture directory (test mode)")
    ap.add_argument("--tmp", help="scratch directory, recreated (test mode)")
    ap.add_argument("--datasette", default=os.path.join(ROOT, ".venv-gui", "bin", "datasette"))
    ap.add_argument("--chromium", default="chromium")
    ap.add_argument("--preload", default="",
                    help="LD_PRELOAD for sqlite3 and Datasette (the ASan runtime of a sanitized build)")
    ap.add_argument("--screenshots", help="write PNGs of the pages of --db into this directory")
    ap.add_argument("--db", help="database to serve with --screenshots")
    ap.add_argument("--features", default="",
                    help="with --screenshots: comma-separated feature ids for feature pages")
    ap.add_argument("--probe", default="", help="with --screenshots: a text for the probe page")
    ap.add_argument("--filter-token", default="(", help="with --screenshots: the features list's token filter")
    a = ap.parse_args()
    if a.screenshots and not a.db:
        ap.error("--screenshots needs --db")
    if not a.screenshots and not (a.fixtures and a.tmp):
        ap.error("--fixtures and --tmp are needed (or --screenshots with --db)")
    return a


def find_tools():
    """Chromium, Datasette and the extension, or a failure that says how to get them."""
    if not any(os.path.isfile(ARGS.ext + sfx) for sfx in ("", ".so")):
        h.fail_setup("the saelite extension was not found at %s(.so): build it first "
                     "(cmake --build build)" % ARGS.ext)
    chromium = shutil.which(ARGS.chromium)
    if not chromium:
        h.fail_setup("chromium not found (%s): %s" % (ARGS.chromium, INSTALL))
    if not os.access(ARGS.datasette, os.X_OK):
        h.fail_setup("Datasette not found at %s: %s" % (ARGS.datasette, INSTALL))
    ARGS.chromium = chromium


def child_env(preload):
    """Environment for a child process; the sanitizer runtime only where asked."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS")}
    if preload and ARGS.preload:
        env["LD_PRELOAD"] = ARGS.preload
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


def make_planted_db(tmp):
    """Extraction 1: the planted language model (make_lm_fixtures.py: byte b fires
    feature b mod 32 with strength s(b)) on its docs.txt, for the probe page and the
    logit lens. Extraction 2: the tiny GPT-2 + SAE on one document (IDS["tiny"]).
    Extraction 3, the default one: the planted activations (top_k 5, context 3),
    with a label on feature 2 and dense_threshold DENSE. Returns (db, lm_id, planted_id)."""
    if ARGS.preload:  # harness runs the shell with this process's environment; Chromium gets its own
        os.environ.update(child_env(True))
    h.CFG = argparse.Namespace(sqlite3=shutil.which(ARGS.sqlite3) or ARGS.sqlite3,
                               ext=os.path.realpath(ARGS.ext), fixtures=os.path.realpath(ARGS.fixtures),
                               tmp=tmp, db=os.path.join(tmp, "planted.db"))
    if not os.path.isfile(h.planted("expected.json")):
        h.fail_setup("fixtures missing in %s: run the ctest 'fixtures' test first" % ARGS.fixtures)
    try:
        lm_id = h.extract(h.CFG.db, sae=h.fixture("lm", "sae"), model=h.fixture("lm", "model"),
                          tokenizer=h.fixture("lm", "tokenizer.json"), dataset=h.fixture("lm", "docs.txt"),
                          top_k=4, context=3, store=os.path.join(tmp, "store_lm"), progress="off")
        tiny_doc = os.path.join(tmp, "tiny.txt")
        with open(tiny_doc, "w", encoding="utf-8") as f:
            f.write("def add(a, b):\n    return a + b  # the sum of two numbers\n")
        tiny = os.path.join(ROOT, "examples", "tiny")
        IDS["tiny"] = h.extract(h.CFG.db, sae=os.path.join(tiny, "sae"), model=os.path.join(tiny, "model"),
                                tokenizer=os.path.join(tiny, "tokenizer.json"), dataset=tiny_doc,
                                text_mode="file", store=os.path.join(tmp, "store_tiny"), progress="off")
        eid = h.extract(h.CFG.db, **h.planted_opts(os.path.join(tmp, "store")))
        h.query(h.CFG.db, "INSERT INTO feature_labels(extraction_id, feature_id, label) "
                          "VALUES (%d, 2, 'open paren');" % eid)
        h.query(h.CFG.db, "UPDATE extractions SET dense_threshold = %r WHERE id = %d;" % (DENSE, eid))
    except h.SqlError as e:
        h.fail_setup("cannot make the planted extraction: %s" % e.message)
    return h.CFG.db, lm_id, eid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db, logdir):
    """scripts/gui.sh on a free port; waits until Datasette answers."""
    port = free_port()
    log_path = os.path.join(logdir, "datasette.log")
    log = open(log_path, "wb")
    env = child_env(True)
    env["DATASETTE"] = ARGS.datasette
    proc = subprocess.Popen([GUI_SH, db, "--port", str(port), "--ext", os.path.realpath(ARGS.ext)],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = "http://127.0.0.1:%d" % port
    SERVER.update(url=url, proc=proc, log=log_path,
                  db_name=os.path.splitext(os.path.basename(db))[0])
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            h.fail_setup("Datasette exited with %d:\n%s" % (proc.returncode, read_log()))
        try:
            urllib.request.urlopen(url + "/-/versions.json", timeout=2).read()
            return url
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_server()
    h.fail_setup("Datasette did not answer on %s within 60 s:\n%s" % (url, read_log()))


def read_log():
    with open(SERVER["log"], encoding="utf-8", errors="replace") as f:
        return f.read()[-4000:]


def stop_server():
    proc = SERVER.get("proc")
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def page_path(path, **params):
    q = urllib.parse.urlencode(params)
    return "/%s/%s%s" % (SERVER["db_name"], path, "?" + q if q else "")


def page_url(path, **params):
    return SERVER["url"] + page_path(path, **params)


# -------------------------------------------------------------------------------------
# Chromium
# -------------------------------------------------------------------------------------
def chromium(*args):
    """Runs headless Chromium with a profile of its own; returns stdout."""
    profile = os.path.join(ARGS.work, "chromium-profile")
    # --no-sandbox: CI runs as root; --disable-dev-shm-usage: containers have a small /dev/shm
    cmd = [ARGS.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--no-first-run", "--user-data-dir=" + profile] + list(args)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                       env=child_env(False))
    if p.returncode != 0:
        raise RuntimeError("chromium exited with %d: %s" % (p.returncode, p.stderr.decode()[-2000:]))
    return p.stdout.decode("utf-8")


_DOMS = {}


def dump_dom(url):
    """The page as Chromium has it after loading (the same URL is loaded once)."""
    if url not in _DOMS:
        _DOMS[url] = chromium("--dump-dom", url)
    return _DOMS[url]


def fetch_html(url):
    """The page's HTML as the server sends it (Datasette renders on the server; its
    scripts only add the SQL editor), for the many variants of a page already
    checked in Chromium: filters and bad parameters."""
    try:
        with urllib.request.urlopen(url, timeout=120) as r:
            return r.read().decode("utf-8")
    except urllib.error.HTTPError as e:  # an SQL error is a page too (status 400)
        return e.read().decode("utf-8")
    except (urllib.error.URLError, ConnectionError) as e:  # the server died: say why
        raise RuntimeError("no answer for %s (%s); end of the server's log:\n%s"
                           % (url, e, read_log()[-3000:])) from None


def screenshot(url, png, width=1280, height=900):
    chromium("--screenshot=" + png, "--window-size=%d,%d" % (width, height), url)
    return os.path.getsize(png)


class Page(HTMLParser):
    """What a Datasette page shows: its results table (header names; per row, per cell
    the text and the marked pieces: <span style=...> and <mark> with their title), its
    error messages, its links and every element name."""

    def __init__(self, dom):
        super().__init__(convert_charrefs=True)
        self.columns, self.rows, self.errors, self.links, self.tags = [], [], [], [], set()
        self._in_table = self._in_th = self._in_error = False
        self._cell = None
        self._marks = []  # open marked spans: [attrs, text]
        self._stack = []  # per open span/mark: whether it is a mark
        self.feed(dom)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "table" and "rows-and-columns" in (a.get("class") or ""):
            self._in_table = True
        elif self._in_table and tag == "tr":
            self._row = []
        elif self._in_table and tag == "th":
            self._in_th, self._th = True, ""
        elif self._in_table and tag == "td":
            self._cell = {"text": "", "marks": [], "links": [], "tags": set()}
        elif tag == "p" and "message-error" in (a.get("class") or ""):
            self._in_error, self._err = True, ""
        elif tag == "a" and self._cell is not None:
            self._cell["links"].append(a.get("href"))
        if tag == "a":
            self.links.append(a.get("href"))
        if self._cell is not None and tag != "td":
            self._cell["tags"].add(tag)
        if self._cell is not None and tag in ("span", "mark"):
            marked = tag == "mark" or "background" in (a.get("style") or "")
            self._stack.append(marked)
            if marked:
                self._marks.append([a, ""])

    def handle_endtag(self, tag):
        if tag == "table" and self._in_table:
            self._in_table = False
        elif self._in_table and tag == "th" and self._in_th:
            self._in_th = False
            self.columns.append(self._th.strip())
        elif self._in_table and tag == "td" and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif self._in_table and tag == "tr" and getattr(self, "_row", None):
            self.rows.append(dict(zip(self.columns, self._row)))
            self._row = None
        elif tag == "p" and self._in_error:
            self._in_error = False
            self.errors.append(self._err.strip())
        if self._cell is not None and tag in ("span", "mark") and self._stack:
            if self._stack.pop():
                attrs, text = self._marks.pop()
                self._cell["marks"].append({"text": text, "title": attrs.get("title"),
                                            "style": attrs.get("style") or "", "tag": tag})

    def handle_data(self, data):
        if self._in_th:
            self._th += data
        if self._cell is not None:
            self._cell["text"] += data
            for m in self._marks:
                m[1] += data
        if self._in_error:
            self._err += data


def load(path, browser=False, **params):
    url = page_url(path, **params)
    page = Page(dump_dom(url) if browser else fetch_html(url))
    page.url = url
    return page


def cell(row, column):
    return row.get(column, {}).get("text", "").strip()


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


# -------------------------------------------------------------------------------------
# Expected values: expected.json, written by make_fixtures.py from the raw inputs
# -------------------------------------------------------------------------------------
def shown(text):
    """A token or example as the pages show it: a newline as ⏎."""
    return text.replace("\n", "\u23ce")


def near(shown_value, exact, half_unit):
    """A value shown rounded (half_unit: half its last decimal) against the exact one."""
    return shown_value is not None and abs(shown_value - exact) <= half_unit * (1 + 1e-9)


def planted_values():
    """Per feature, its active values as the store keeps them (fp16), read from the raw
    acts.safetensors: every non-special token (the special one, 15, has a zero row)."""
    raw = st.read(h.planted("acts.safetensors"))
    _, (n_seq, seq_len), tokens = raw["tokens"]
    _, (_, _, d), acts = raw["activations"]
    values = {j: [] for j in range(d)}
    where = {}  # (feature, sequence, position) -> f32 value
    for i, t in enumerate(tokens):
        if t == 15:
            continue
        for j in range(d):
            v = acts[i * d + j]
            if v > 0:
                values[j].append(st.f16(v))
                where[(j, i // seq_len, i % seq_len)] = v
    return values, where


def percentile(sorted_values, q):
    """numpy's default (linear) percentile."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def histogram(values, bins):
    """Counts of bins equal-width bins spanning [min, max]; the max in the last."""
    lo, hi = min(values), max(values)
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(math.floor((v - lo) / (hi - lo) * bins)))] += 1
    return lo, hi, counts


def expected_list(exp, keep=lambda f: True, key=lambda f: (-f["frequency"], f["feature_id"])):
    return [f["feature_id"] for f in sorted((f for f in exp["features"] if keep(f)), key=key)]


# -------------------------------------------------------------------------------------
# Tests
# -------------------------------------------------------------------------------------
EXP = None
IDS = {}
DENSE = 0.075  # the planted extraction's dense_threshold: features 9 and 13 are above
PLANTED_VALUES, PLANTED_WHERE = None, None


def test_feature_list():
    page = load("features", browser=True)
    check(not page.errors, "features: no error on the page", repr(page.errors))
    check_equal(page.columns, ["feature_id", "label", "frequency", "max_activation",
                               "mean_activation", "is_dense", "top_token", "example_html", "extraction_id"],
                "features: columns")
    ids = [int(cell(r, "feature_id")) for r in page.rows]
    check_equal(ids, expected_list(EXP), "features: all 16 in frequency order (ties by id)")
    by_id = {f["feature_id"]: f for f in EXP["features"]}
    bad = []
    for r in page.rows:
        f = by_id[int(cell(r, "feature_id"))]
        fid = f["feature_id"]
        # shown rounded to 6 and 4 decimals
        if not near(number(cell(r, "frequency")), f["frequency"], 0.5e-6):
            bad.append("%d frequency %s vs %r" % (fid, cell(r, "frequency"), f["frequency"]))
        if not near(number(cell(r, "max_activation")), f["max_activation"], 0.5e-4):
            bad.append("%d max_activation %s vs %r" % (fid, cell(r, "max_activation"), f["max_activation"]))
        link = r["feature_id"]["links"]
        if link != [page_path("feature", feature_id=fid, extraction_id=IDS["planted"])]:
            bad.append("%d links to %r" % (fid, link))
        ex = r["example_html"]
        if f["is_dead"]:
            if ex["text"].strip() or ex["marks"]:
                bad.append("%d (dead) example %r" % (fid, ex["text"]))
            continue
        # The example text is shown as text (escaped); its max token is the one mark.
        want_text = shown(f["example"].replace("\u00ab", "").replace("\u00bb", ""))
        if ex["text"] != want_text:
            bad.append("%d example text %r vs %r" % (fid, ex["text"], want_text))
        marks = [m["text"] for m in ex["marks"]]
        if marks != [shown(f["top_token"])]:
            bad.append("%d marked %r vs top token %r" % (fid, marks, f["top_token"]))
    check(not bad, "features: frequency, max_activation, link and highlighted example of every row",
          "; ".join(bad))
    label = [cell(r, "label") for r in page.rows if cell(r, "feature_id") == "2"]
    check_equal(label, ["open paren"], "features: feature 2's label from feature_labels")
    # '<|endoftext|>' in an example is text, not an element.
    check("|endoftext|" not in " ".join(page.tags), "features: '<|endoftext|>' escaped, not a tag")
    f0 = [r for r in page.rows if cell(r, "feature_id") == "0"][0]
    check(f0["example_html"]["text"].startswith("<|endoftext|>"),
          "features: feature 0's example starts with the text <|endoftext|>", f0["example_html"]["text"])


def test_feature_list_filters():
    def ids(**params):
        page = load("features", **params)
        check(not page.errors, "features %r: no error" % params, repr(page.errors), quiet=True)
        return [int(cell(r, "feature_id")) for r in page.rows]

    check_equal(ids(token="cat"), [1], "features?token=cat: the ' cat' feature")
    check_equal(ids(dead="1"), [15], "features?dead=1: the dead feature 15")
    check_equal(ids(dead="0"), expected_list(EXP, lambda f: not f["is_dead"]),
                "features?dead=0: the 15 live ones")
    check_equal(ids(dense="1"), expected_list(EXP, lambda f: f["frequency"] > DENSE),
                "features?dense=1: frequency above the dense_threshold %g" % DENSE)
    check_equal(ids(label="PAREN"), [2], "features?label=PAREN: feature 2 (case-insensitive)")
    lo, hi = 0.06, 0.07
    check_equal(ids(min_frequency=lo, max_frequency=hi),
                expected_list(EXP, lambda f: lo <= f["frequency"] <= hi),
                "features with %g <= frequency <= %g" % (lo, hi))
    check_equal(ids(sort="feature_id"), list(range(16)), "features?sort=feature_id: 0..15")
    check_equal(ids(sort="max_activation"),
                expected_list(EXP, key=lambda f: (-f["max_activation"], f["feature_id"])),
                "features?sort=max_activation")
    page = load("features", min_frequency="abc")
    check_equal([cell(r, "label") for r in page.rows], ["not a number: min_frequency = 'abc'"],
                "features?min_frequency=abc: says the filter is not a number")
    page = load("features", extraction_id="7")
    check(any("no extraction with id 7" in e for e in page.errors),
          "features?extraction_id=7: the extension's error on the page", repr(page.errors))


def feature_page(fid):
    page = load("feature", browser=True, feature_id=fid)
    check(not page.errors, "feature %d: no error on the page" % fid, repr(page.errors), quiet=True)
    return page


def rows_of(page, section):
    return [r for r in page.rows if cell(r, "section") == section]


def test_feature_page():
    stats = {s["feature_id"]: s for s in EXP["feature_stats"]}
    for fid in (0, 2, 12):
        page = feature_page(fid)
        s = stats[fid]
        got = {cell(r, "item"): number(cell(r, "value")) for r in rows_of(page, "stats")}
        want = {"tokens seen": (s["n_tokens"], 0), "active on": (s["n_active"], 0),
                "frequency": (s["frequency"], 0.5e-6), "log10 frequency": (s["log10_frequency"], 0.5e-4),
                "mean (active)": (s["mean"], 0.5e-4), "std (active)": (s["std"], 0.5e-4),
                "min (active)": (s["min_active"], 0.5e-4), "max": (s["max"], 0.5e-4)}
        bad = ["%s: %r vs %r" % (k, got.get(k), v) for k, (v, half_unit) in want.items()
               if not near(got.get(k), v, half_unit)]
        check(not bad, "feature %d: the 8 statistics" % fid, "; ".join(bad))
        top = [e for e in EXP["top_examples"] if e["feature_id"] == fid]
        examples = rows_of(page, "top example")
        check_equal(len(examples), len(top), "feature %d: %d top examples" % (fid, len(top)))
        bad = []
        for r, e in zip(examples, top):
            item = "#%d (sequence %d, position %d)" % (e["rank"], e["sequence_id"], e["position"])
            if cell(r, "item") != item:
                bad.append("item %r vs %r" % (cell(r, "item"), item))
            if not h.same_f32(number(cell(r, "value")), e["activation"]):
                bad.append("rank %d activation %s vs %r" % (e["rank"], cell(r, "value"), e["activation"]))
            d = r["detail_html"]
            want_text = "".join(e["tokens"])  # newlines kept (pre-wrap)
            if d["text"] != want_text:
                bad.append("rank %d text %r vs %r" % (e["rank"], d["text"], want_text))
            # Exactly the window tokens with activation > 0 are marked, each with its value.
            active = [(t, a) for t, a in zip(e["tokens"], e["activations"]) if a > 0]
            marks = [(m["text"], number(m["title"] or "")) for m in d["marks"]]
            if [t for t, _ in marks] != [t for t, _ in active] or not all(
                    v is not None and math.isclose(v, a, rel_tol=1e-3) for (_, v), (_, a) in zip(marks, active)):
                bad.append("rank %d marks %r vs %r" % (e["rank"], marks, active))
            # The max token is the most strongly shaded one (opacity 1).
            mx = [m for m in d["marks"] if m["title"] and number(m["title"]) is not None
                  and math.isclose(number(m["title"]), e["activation"], rel_tol=1e-3)]
            if not mx or not re.search(r"rgba\(255,\s*140,\s*0,\s*1(\.0+)?\)", mx[-1]["style"]):
                bad.append("rank %d max token shading %r" % (e["rank"], [m["style"] for m in mx]))
        check(not bad, "feature %d: top examples in rank order, text, highlighted tokens and values" % fid,
              "; ".join(bad))
    label = [cell(r, "value") for r in rows_of(feature_page(2), "feature") if cell(r, "item") == "label"]
    check_equal(label, ["open paren"], "feature 2: its label")
    for fid, flags in ((9, "0 / 1"), (2, "0 / 0"), (15, "1 / 0")):
        got = [cell(r, "value") for r in rows_of(feature_page(fid), "feature") if cell(r, "item") == "dead / dense"]
        check_equal(got, [flags], "feature %d: dead / dense %s (dense_threshold %g)" % (fid, flags, DENSE))


def test_feature_page_histogram_quantiles():
    """Quantiles and the 20-bin histogram against the raw activations (fp16 as stored)."""
    for fid in (0, 7):
        page = feature_page(fid)
        vals = sorted(PLANTED_VALUES[fid])
        got = {cell(r, "item"): number(cell(r, "value")) for r in rows_of(page, "stats")}
        bad = ["%s: %r vs %r" % (k, got.get(k), percentile(vals, q))
               for k, q in (("p50 (active)", 0.5), ("p90 (active)", 0.9), ("p99 (active)", 0.99))
               if not near(got.get(k), percentile(vals, q), 0.6e-4)]
        check(not bad, "feature %d: p50, p90, p99 of its %d stored values" % (fid, len(vals)), "; ".join(bad))
        lo, hi, counts = histogram(vals, 20)
        hist = rows_of(page, "histogram")
        check_equal([int(cell(r, "value")) for r in hist], counts,
                    "feature %d: histogram counts in 20 bins over [%g, %g]" % (fid, lo, hi))
        check(hist and cell(hist[0], "item").startswith("%.4g to" % lo)
              and cell(hist[-1], "item").endswith("to %.4g" % hi),
              "feature %d: histogram spans min to max" % fid,
              "%r ... %r" % (cell(hist[0], "item") if hist else None, cell(hist[-1], "item") if hist else None))
        top = max(counts)
        bars = [len(r["detail_html"]["text"]) for r in hist]
        want = [0 if c == 0 else max(1, round(40.0 * c / top)) for c in counts]
        check_equal(bars, want, "feature %d: bar lengths proportional to the counts (40 at the top)" % fid)
    check_equal(rows_of(feature_page(15), "histogram"), [], "feature 15 (dead): no histogram")


def test_feature_page_logits():
    """Logit lens on the planted language model: W_dec = I and W_U = wte with
    wte[t] = s(t) e_(t mod 32), so feature f's logit for token t is s(t) when
    t mod 32 = f, else 0 (make_lm_fixtures.py)."""
    fid = 1
    logit = {t: (lmfix.strength(t) if t % 32 == fid else 0.0) for t in range(lmfix.V)}
    promotes = sorted(logit, key=lambda t: (-logit[t], t))[:5]
    suppresses = sorted(logit, key=lambda t: (logit[t], t))[:5]
    page = load("feature", browser=True, feature_id=fid, extraction_id=IDS["lm"])
    check(not page.errors, "feature %d of the language model: no error" % fid, repr(page.errors))
    got_p = [number(cell(r, "value")) for r in rows_of(page, "promotes")]
    check_equal(got_p, [logit[t] for t in promotes], "feature %d: the 5 largest logits s(t), t mod 32 = %d"
                % (fid, fid))
    texts = [cell(r, "item") for r in rows_of(page, "promotes")]
    want_texts = [json.dumps(chr(t)) if 32 <= t < 127 else None for t in promotes]
    check(all(w is None or w == g for g, w in zip(texts, want_texts)) and len(texts) == 5,
          "feature %d: promoted tokens %r" % (fid, [w for w in want_texts if w]), repr(texts))
    got_s = [number(cell(r, "value")) for r in rows_of(page, "suppresses")]
    check_equal(got_s, [logit[t] for t in suppresses], "feature %d: the 5 smallest logits" % fid)
    page = feature_page(0)
    check_equal(rows_of(page, "promotes") + rows_of(page, "suppresses"), [],
                "feature 0 of stored activations (no model): no logit rows, no error")


def test_examples_page():
    """Every kind of example: its max token's value is the raw activation there."""
    for fid in (0, 9):
        page = load("examples", browser=True, feature_id=fid)
        check(not page.errors, "examples %d: no error" % fid, repr(page.errors))
        kinds = {}
        bad = []
        for r in page.rows:
            kind = cell(r, "kind")
            kinds[kind] = kinds.get(kind, 0) + 1
            key = (fid, int(cell(r, "sequence_id")), int(cell(r, "position")))
            act = number(cell(r, "activation"))
            raw = PLANTED_WHERE.get(key)
            # top: exact f32; interval and random: the stored fp16
            if raw is None or not (h.same_f32(act, raw) or h.same_f32(act, st.f16(raw))):
                bad.append("%s at %r: %r vs raw %r" % (kind, key[1:], act, raw))
            marks = r["context_html"]["marks"]
            if not marks or any(m["text"] != EXP["token_strings"][fid] for m in marks):
                bad.append("%s at %r marks %r" % (kind, key[1:], [m["text"] for m in marks]))
            if kind == "interval":
                # bounds shown with 4 digits; values are fp16 (relative error 2^-11)
                m = re.match(r"^(\S+) to (\S+) \(", cell(r, "interval"))
                if not m or not float(m.group(1)) * (1 - 2e-3) <= act <= float(m.group(2)) * (1 + 2e-3):
                    bad.append("interval %r holds %r" % (cell(r, "interval"), act))
        n = len(PLANTED_VALUES[fid])
        check(kinds.get("top") == 5 and kinds.get("random") == min(10, n) and kinds.get("interval", 0) > 0,
              "examples %d: 5 top, %d random and some interval examples" % (fid, min(10, n)), repr(kinds))
        check(not bad, "examples %d: each at a place where feature %d fires with that value, "
              "marking token %r" % (fid, fid, EXP["token_strings"][fid]), "; ".join(bad[:5]))
        page = load("examples", feature_id=fid, kind="random")
        check_equal({cell(r, "kind") for r in page.rows}, {"random"}, "examples?kind=random: only random")


def test_density_page():
    """log10 frequency of the 15 live features in 10 bins, the dead one first."""
    logs = [math.log10(f["frequency"]) for f in EXP["features"] if not f["is_dead"]]
    lo, hi, counts = histogram(logs, 10)
    page = load("density", browser=True, bins=10)
    check(not page.errors, "density: no error", repr(page.errors))
    got = [(cell(r, "log10_frequency_from"), int(cell(r, "count"))) for r in page.rows]
    check_equal(got[:1], [("dead", 1)], "density: first row, the one dead feature")
    check_equal([c for _, c in got[1:]], counts, "density: counts of log10 frequency in 10 bins")
    bars = [len(cell(r, "bar")) for r in page.rows]
    top = max(counts)
    want = [min(50, max(1, round(50.0 * c / top))) if c else 0 for c in [1] + counts]
    check_equal(bars, want, "density: bars scaled to the fullest live bin (50)")
    check(len(got) == 11 and math.isclose(float(got[1][0]), lo, abs_tol=6e-4),
          "density: bins start at the rarest live feature (%.3f)" % lo, repr(got[1:2]))


def test_feature_page_edges():
    page = feature_page(15)
    got = {cell(r, "item"): number(cell(r, "value")) for r in rows_of(page, "stats")}
    check(got.get("active on") == 0 and got.get("max") == 0 and got.get("tokens seen") == EXP["n_counted"],
          "feature 15 (dead): active on 0 of %d tokens, max 0" % EXP["n_counted"], repr(got))
    check_equal(rows_of(page, "top example"), [], "feature 15 (dead): no top examples")
    for bad_id, needle in (("99", "feature_id '99' is not a feature of extraction"),
                           ("abc", "feature_id 'abc' is not a feature of extraction"),
                           ("", "enter a feature_id")):
        page = load("feature", browser=bad_id == "99", feature_id=bad_id)
        items = [cell(r, "item") for r in rows_of(page, "not found")]
        check(len(page.rows) == 1 and items and needle in items[0] and "(0 to 15)" in items[0],
              "feature?feature_id=%s: one row saying %r" % (bad_id, needle), repr(items))


def test_markup_safety():
    """Only the pages' own markup is shown as HTML: a query's <script> stays text."""
    sql = ("SELECT '<script>document.title=1</script><b onclick=x>b</b>' AS evil_html, "
           "'<span style=\"background-color:rgba(255,140,0,1.00)\" title=\"3\">ok</span>' AS fine_html")
    page = Page(dump_dom("%s/%s?%s" % (SERVER["url"], SERVER["db_name"], urllib.parse.urlencode({"sql": sql}))))
    row = page.rows[0] if page.rows else {}
    tags = row["evil_html"]["tags"] if row else None
    check(tags == set(), "custom SQL: a *_html value with <script> or an onclick is shown escaped",
          repr(tags))
    check(row and "<script>" in cell(row, "evil_html"), "custom SQL: its text is visible as typed",
          repr(row))
    check(row and [m["text"] for m in row["fine_html"]["marks"]] == ["ok"],
          "custom SQL: a highlight span is rendered", repr(row))


def test_tables_and_readonly():
    page = load("extractions", browser=True)
    check_equal([cell(r, "status") for r in page.rows], ["done"] * 3, "extractions table: three runs, done")
    page = load("feature_labels")
    check_equal([(cell(r, "feature_id"), cell(r, "label")) for r in page.rows], [("2", "open paren")],
                "feature_labels table: the label")
    # A complete, valid extract_features call (it would write through its own connection).
    store = os.path.join(ARGS.work, "store_from_the_web")
    sql = h.extract_sql(**h.planted_opts(store))
    for name, call in (("extract_features", sql), ("resume_extraction", "SELECT resume_extraction(1) AS id"),
                       ("load_extension", "SELECT load_extension('%s') AS x" % os.path.realpath(ARGS.ext))):
        page = Page(fetch_html("%s/%s?%s" % (SERVER["url"], SERVER["db_name"], urllib.parse.urlencode(
            {"sql": call.rstrip(";")}))))
        check(any("not authorized to use function: %s" % name in e for e in page.errors) and not page.rows,
              "custom SQL: %s is refused" % name, repr((page.errors, page.rows)))
    check(not os.path.exists(store) and h.count_extractions(h.CFG.db) == 3,
          "no store written and still 3 extractions after the refused extract_features")


def test_probe():
    """encode_text on the planted language model: byte b of the text fires feature
    b mod 32 with strength s(b) (make_lm_fixtures.py), nothing else."""
    text = "x = f(1);\nif (a < b) { return 0; }"
    ids, _, special = lmfix.encode(text)
    want = [(str(i), chr(t).replace("\n", "\u23ce"), str(t), str(t % 32), lmfix.strength(t))
            for i, (t, sp) in enumerate(zip(ids, special)) if not sp]
    page = load("probe", browser=True, text=text, extraction_id=IDS["lm"])
    check(not page.errors, "probe: no error", repr(page.errors))
    check_equal(page.columns, ["position", "token", "token_id", "feature_id", "activation", "top_token",
                               "label", "extraction_id"], "probe: columns")
    got = [(cell(r, "position"), r["token"]["text"], cell(r, "token_id"), cell(r, "feature_id"),
            number(cell(r, "activation"))) for r in page.rows]
    check_equal(got, want, "probe: %d tokens, each feature b mod 32 with activation s(b)" % len(want))
    links = [r["feature_id"]["links"] for r in page.rows]
    check(links and all(ln == [page_path("feature", feature_id=int(g[3]), extraction_id=IDS["lm"])]
                        for ln, g in zip(links, got)),
          "probe: each feature id links to its page in extraction %d" % IDS["lm"], repr(links[:2]))
    page = load("probe", text=text, feature_id=1, extraction_id=IDS["lm"])
    got = [(cell(r, "position"), cell(r, "feature_id")) for r in page.rows]
    check_equal(got, [(p, f) for p, _, _, f, _ in want if f == "1"],
                "probe?feature_id=1: the tokens whose byte is 1 mod 32")
    page = load("probe", text=text, per_token="three", extraction_id=IDS["lm"])
    check_equal([cell(r, "token") for r in page.rows], ["not a whole number: per_token = 'three'"],
                "probe?per_token=three: says it is not a whole number")
    page = load("probe", text=text)
    check(page.errors and not page.rows, "probe on the default extraction (stored activations, no model): "
          "an error on the page", repr(page.errors))
    print("      (%s)" % (page.errors[:1],))


def test_probe_per_token():
    """The bundled tiny GPT-2 + top-k SAE: many features per token; the page keeps the
    per_token strongest of encode_text's rows (read here through the sqlite3 shell)."""
    text = "x = add(1, 2)"
    rows = h.query(h.CFG.db, "SELECT position, feature_id, activation FROM encode_text(%s, %d);"
                   % (h.sql_str(text), IDS["tiny"]))
    by_pos = {}
    for r in rows:
        by_pos.setdefault(r["position"], []).append(r)
    for per_token in ("3", "", "0"):
        keep = {"3": 3, "": 5, "0": None}[per_token]
        want = [(str(p), str(r["feature_id"]))
                for p in sorted(by_pos)
                for r in sorted(by_pos[p], key=lambda r: (-r["activation"], r["feature_id"]))[:keep]]
        page = load("probe", text=text, per_token=per_token, extraction_id=IDS["tiny"])
        got = [(cell(r, "position"), cell(r, "feature_id")) for r in page.rows]
        check(got == want and len(by_pos) > 3 and len(rows) > 3 * len(by_pos),
              "probe per_token=%r: the %s strongest features of each of %d tokens (%d rows)"
              % (per_token, keep or "all", len(by_pos), len(want)),
              "got %d rows, expected %d: %r" % (len(got), len(want), got[:6]))


def test_concurrent_requests():
    """Datasette answers from a thread pool, each thread with its own connection and
    saelite catalog: 48 concurrent requests for feature pages give the same rows."""
    def fetch(fid):
        url = page_url("feature.json", feature_id=fid, _shape="array")
        with urllib.request.urlopen(url, timeout=60) as r:
            return fid, json.load(r)

    stats = {s["feature_id"]: s for s in EXP["feature_stats"]}
    bad = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for fid, rows in pool.map(fetch, [i % 16 for i in range(48)]):
            got = {r["item"]: r["value"] for r in rows if r["section"] == "stats"}
            n_ex = sum(r["section"] == "top example" for r in rows)
            want_ex = sum(e["feature_id"] == fid for e in EXP["top_examples"])
            if got.get("active on") != stats[fid]["n_active"] or n_ex != want_ex:
                bad.append("feature %d: active on %r, %d examples" % (fid, got.get("active on"), n_ex))
    check(not bad, "48 concurrent feature pages: each with its own feature's rows", "; ".join(bad))


# -------------------------------------------------------------------------------------
# Screenshots of an existing database (docs/screenshots)
# -------------------------------------------------------------------------------------
def take_screenshots():
    out = os.path.abspath(ARGS.screenshots)
    os.makedirs(out, exist_ok=True)
    pages = [("features.png", page_url("features"), 1280, 1000),
             ("features-filtered.png", page_url("features", token=ARGS.filter_token, sort="max_activation"),
              1280, 800),
             ("density.png", page_url("density"), 1280, 1000)]
    for fid in [f for f in ARGS.features.split(",") if f]:
        pages.append(("feature-%s.png" % fid, page_url("feature", feature_id=fid), 1280, 1900))
        pages.append(("examples-%s.png" % fid, page_url("examples", feature_id=fid, kind="interval"), 1280, 1400))
    if ARGS.probe:
        pages.append(("probe.png", page_url("probe", text=ARGS.probe, per_token=3), 1280, 1300))
    for name, url, w, hgt in pages:
        size = screenshot(url, os.path.join(out, name), w, hgt)
        check(size < 300 * 1024, "%s: %d bytes (< 300 KB) from %s" % (name, size, url))


def main():
    global ARGS, EXP, PLANTED_VALUES, PLANTED_WHERE
    ARGS = parse_args()
    find_tools()
    if ARGS.screenshots:
        ARGS.work = os.path.realpath(tempfile.mkdtemp(prefix="saelite-gui-"))
        start_server(os.path.realpath(ARGS.db), ARGS.work)
        try:
            h.run_tests(take_screenshots)
        finally:
            stop_server()
            shutil.rmtree(ARGS.work, ignore_errors=True)
        return
    tmp = os.path.abspath(ARGS.tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ARGS.work = os.path.realpath(tmp)
    db, IDS["lm"], IDS["planted"] = make_planted_db(ARGS.work)
    EXP = h.load_expected("expected.json")
    PLANTED_VALUES, PLANTED_WHERE = planted_values()
    start_server(db, ARGS.work)
    try:
        h.run_tests(test_feature_list, test_feature_list_filters, test_feature_page,
                    test_feature_page_histogram_quantiles, test_feature_page_logits, test_examples_page,
                    test_density_page, test_feature_page_edges, test_markup_safety, test_tables_and_readonly,
                    test_probe, test_probe_per_token, test_concurrent_requests)
    finally:
        stop_server()


if __name__ == "__main__":
    main()
