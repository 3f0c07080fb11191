"""saelite_gui.py: the Datasette plugin of the saelite pages (loaded with --plugins-dir).

- canned_queries: offers the queries of sql/datasette/metadata.yaml
  (plugins.saelite.queries) on every database that has an `extractions` table, so
  the pages work whatever the database file is called.
- prepare_connection: an authorizer on each connection denies extract_features,
  resume_extraction and load_extension. Datasette's connections are read-only, but
  the first two write through a connection of their own (progress is committed as a
  run goes), read any path on the server and run for minutes; load_extension would
  load any library. Run extractions in the sqlite3 shell, then serve.
- render_cell: a column whose name ends in `_html` is shown as HTML when it holds
  only the markup those queries and highlight(..., 'html') make (span and mark
  elements with a plain inline style and a title, line breaks); anything else stays
  escaped text, so a query cannot inject script through such a column. A
  `feature_id` cell links to the feature page, keeping the row's extraction_id.
"""
import copy
import re
import sqlite3
from html.parser import HTMLParser
from urllib.parse import urlencode

from datasette import hookimpl
from markupsafe import Markup, escape

ALLOWED_TAGS = {"span", "mark", "b", "br"}
ALLOWED_ATTRS = {"style", "title"}
# Declarations like "background-color:rgba(255,140,0,0.50)" or "white-space:pre-wrap":
# no url(), no quotes, no escapes.
STYLE = re.compile(r"^\s*([a-z-]+\s*:\s*[#a-z0-9 .,%()-]+\s*;?\s*)*$", re.I)


DENIED_FUNCTIONS = {"extract_features", "resume_extraction", "load_extension"}


class _MarkupCheck(HTMLParser):
    """Accepts only ALLOWED_TAGS with ALLOWED_ATTRS and a plain STYLE."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ok = True

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.ok = False
        for name, value in attrs:
            if name not in ALLOWED_ATTRS or value is None:
                self.ok = False
            elif name == "style" and (not STYLE.match(value) or "url" in value.lower()):
                self.ok = False

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag not in ALLOWED_TAGS:
            self.ok = False

    def handle_comment(self, data):
        self.ok = False

    def handle_decl(self, decl):
        self.ok = False

    def handle_pi(self, data):
        self.ok = False

    def unknown_decl(self, data):
        self.ok = False


def safe_markup(text):
    """True when text holds only the markup the saelite pages make."""
    check = _MarkupCheck()
    try:
        check.feed(text)
        check.close()
    except Exception:  # a parser error means "not ours"
        return False
    return check.ok


@hookimpl
def prepare_connection(conn, database, datasette):
    def authorizer(action, arg1, arg2, db_name, trigger):
        # SQLITE_FUNCTION: arg2 is the function's name
        if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in DENIED_FUNCTIONS:
            return sqlite3.SQLITE_DENY  # "not authorized to use function: NAME"
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorizer)


@hookimpl
def canned_queries(datasette, database, actor):
    async def queries():
        if database.startswith("_"):  # _internal, _memory
            return {}
        if not await datasette.get_database(database).table_exists("extractions"):
            return {}
        config = datasette.plugin_config("saelite") or {}
        # A copy: Datasette annotates the dicts it is given.
        return copy.deepcopy(config.get("queries") or {})

    return queries


@hookimpl
def render_cell(row, value, column, table, database, datasette):
    if column.endswith("_html") and isinstance(value, str) and safe_markup(value):
        return Markup(value)
    if column == "feature_id" and isinstance(value, int) and not isinstance(value, bool):
        args = {"feature_id": value}
        keys = row.keys() if hasattr(row, "keys") else []
        if "extraction_id" in keys and isinstance(row["extraction_id"], int):
            args["extraction_id"] = row["extraction_id"]
        url = datasette.urls.database(database) + "/feature?" + urlencode(args)
        return Markup('<a href="%s">%d</a>' % (escape(url), value))
    return None
