#!/usr/bin/env python3
"""test_highlight.py: highlight(tokens_json, activations_json [, mode]), exact outputs.

Hand-made inputs with the outputs written out by hand from the definition in
ext/highlight.c / docs/SQL.md: text marks «TOKEN:V» (V as %.3g), html escapes and
shades with alpha = activation / max (%.2f), ansi picks the xterm-256 ramp
229 222 215 208 202 by floor(5 * activation / max). Escaping of < & " ' >, integer
tokens, zero and negative activations, and every kind of bad input. Also run on
real top_examples rows of the planted extraction.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import check_equal  # noqa: E402

CFG = h.setup(__doc__)
DB = CFG.db
ESC = "\x1b"


def hl(tokens, acts, mode=None):
    args = "%s, %s" % (h.sql_str(tokens), h.sql_str(acts)) + (", %s" % h.sql_str(mode) if mode else "")
    return h.query(DB, "SELECT highlight(%s) AS v;" % args)[0]["v"]


def span(alpha, value, text):
    return '<span style="background-color:rgba(255,140,0,%s)" title="%s">%s</span>' % (alpha, value, text)


def test_text():
    check_equal(hl('["The"," cat"," sat"]', '[0, 2, 0.5]'), "The« cat:2»« sat:0.5»", "text: active tokens marked")
    check_equal(hl('["a","b"]', '[0.123456, 1234567]', "text"), "«a:0.123»«b:1.23e+06»", "text: %.3g values")
    check_equal(hl('["x","y"]', '[-1, 0]'), "xy", "text: zero and negative are inactive")
    check_equal(hl('[]', '[]'), "", "text: empty arrays")
    check_equal(hl('[17, "z"]', '[1, 0]'), "«17:1»z", "integer tokens as their decimal form")


def test_html():
    check_equal(hl('["a", " <b>", "&", "\\"q\\"", "it\'s"]', '[0, 2.5, 1, 0, 0.5]', "html"),
                'a' + span("1.00", "2.5", " &lt;b&gt;") + span("0.40", "1", "&amp;") + "&quot;q&quot;"
                + span("0.20", "0.5", "it&#39;s"),
                "html: escaped text, alpha = activation / max")
    check_equal(hl('["<"]', '[0]', "html"), "&lt;", "html: an inactive token is escaped too")


def test_ansi():
    got = hl('["a","b","c","d","e","f"]', '[0, 1, 2.5, 5, 9.99, 10]', "ansi")
    want = ("a" + ESC + "[30;48;5;229mb" + ESC + "[0m" + ESC + "[30;48;5;222mc" + ESC + "[0m"
            + ESC + "[30;48;5;215md" + ESC + "[0m" + ESC + "[30;48;5;202me" + ESC + "[0m"
            + ESC + "[30;48;5;202mf" + ESC + "[0m")
    check_equal(got, want, "ansi: ramp levels 0 (0.1), 1 (0.25), 2 (0.5), 4 (0.999), 4 (1.0)")


def test_errors():
    h.expect_error(DB, "SELECT highlight('[\"a\"', '[1]');", "highlight", "tokens_json is not valid JSON")
    h.expect_error(DB, "SELECT highlight('[\"a\"]', 'nope');", "activations_json is not valid JSON")
    h.expect_error(DB, "SELECT highlight('{\"a\": 1}', '[1]');", "tokens_json must be a JSON array")
    h.expect_error(DB, "SELECT highlight('[\"a\",\"b\"]', '[1]');", "tokens_json has 2 elements but activations_json 1")
    h.expect_error(DB, "SELECT highlight('[\"a\"]', '[\"1\"]');", "activations_json[0] is not a finite number")
    h.expect_error(DB, "SELECT highlight('[[1]]', '[1]');", "tokens_json[0] is not a string")
    h.expect_error(DB, "SELECT highlight('[\"a\"]', '[1]', 'svg');", "mode must be one of 'text', 'html', 'ansi'")
    check_equal(h.query(DB, "SELECT highlight(NULL, '[1]') IS NULL AS n;"), [{"n": 1}], "NULL in, NULL out")


def test_on_top_examples():
    eid = h.extract(DB, **h.planted_opts(h.tmp_path("store_planted")))
    rows = h.query(DB, "SELECT tokens, activations, max_index, token, activation, highlight(tokens, activations) AS t "
                       "FROM top_examples WHERE extraction_id = %d AND feature_id = 3 AND rank = 1;" % eid)
    r = rows[0]
    toks, acts = h.as_json(r["tokens"]), h.as_json(r["activations"])
    want = "".join("«%s:%s»" % (t, "%.3g" % a) if a > 0 else t for t, a in zip(toks, acts))
    check_equal(r["t"], want, "top_examples row: highlight of its own tokens and activations")
    check_equal("«%s:%s»" % (r["token"], "%.3g" % r["activation"]) in r["t"], True, "the max token is marked")


if __name__ == "__main__":
    h.run_tests(test_text, test_html, test_ansi, test_errors, test_on_top_examples)
