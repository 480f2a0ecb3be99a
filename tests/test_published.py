"""The committed leaderboards are exactly what `zoo leaderboard` renders from the committed
results database: nobody edited a table by hand, and no table is stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.harness.leaderboard import render_leaderboards
from zoo.harness.results import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
DATABASE = ROOT / "results" / "results.sqlite"


@pytest.mark.skipif(not DATABASE.is_file(), reason="no published results in this checkout")
def test_committed_leaderboards_equal_a_fresh_render(tmp_path):
    readonly = tmp_path / "results.sqlite"
    readonly.write_bytes(DATABASE.read_bytes())  # never touch the committed file
    with ResultsStore(readonly) as store:
        rendered = render_leaderboards(store, tmp_path / "leaderboards")
    assert rendered, "the published database has no completed runs"
    for page in rendered:
        committed = ROOT / "leaderboards" / page.name
        assert committed.is_file(), f"{page.name} is rendered but not committed"
        assert committed.read_text() == page.read_text(), f"{page.name} is stale or hand-edited"


def test_every_sample_grid_a_published_board_shows_is_committed():
    import re

    for board in sorted((ROOT / "leaderboards").glob("var-*.md")):
        grids = re.findall(r'<img src="([^"]+)"', board.read_text())
        assert grids, f"{board.name} shows no sample grid"
        for grid in grids:
            assert (ROOT / "leaderboards" / grid).is_file(), f"{board.name}: {grid} is missing"
