"""hmff_edge.tables: the one writer of the text and Markdown tables."""

from __future__ import annotations

from hmff_edge.tables import markdown_table, text_table

ROWS = [{"name": "a|b", "n": 3, "x": None}, {"name": "long name", "n": 1234, "x": "y"}]
COLUMNS = [("name", "model"), ("n", "count"), ("x", "extra")]


def test_markdown_table_escapes_pipes_leaves_missing_cells_empty_and_aligns_on_request():
    assert markdown_table(ROWS, COLUMNS) == (
        "| model | count | extra |\n|---|---|---|\n| a\\|b | 3 |  |\n| long name | 1234 | y |")
    assert markdown_table(ROWS, COLUMNS, right={"n"}).splitlines()[1] == "|---|---:|---|"


def test_text_table_right_aligns_numbers():
    assert text_table(ROWS, COLUMNS).splitlines() == [
        "model      count  extra", "---------  -----  -----", "a|b            3",
        "long name   1234  y"]
