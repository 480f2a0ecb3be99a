"""The committed leaderboards are exactly what `zoo leaderboard` renders from the committed
results database: nobody edited a table by hand, and no table, CSV, JSON, index or plot of any
board (classification, language model, quantization, generation, init grid) is stale or left
over from an older render. The same holds for the committed website (`site/`, from `--html`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zoo.boards.files import BENCH_FILES, REGENERATE
from zoo.boards.render import render_leaderboards
from zoo.runs.results import ResultsStore

ROOT = Path(__file__).resolve().parent.parent
DATABASE = ROOT / "results" / "results.sqlite"
PUBLISHED = ROOT / "leaderboards"
PUBLISHED_SITE = ROOT / "site"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """(folder, every path `zoo leaderboard` writes there) for the committed database."""
    if not DATABASE.is_file():
        pytest.skip("no published results in this checkout")
    tmp = tmp_path_factory.mktemp("published")
    copy = tmp / "results.sqlite"
    copy.write_bytes(DATABASE.read_bytes())  # never touch the committed file
    out = tmp / "leaderboards"
    for bench_page in BENCH_FILES:  # the index lists them if committed
        if (PUBLISHED / bench_page).is_file():
            out.mkdir(exist_ok=True)
            (out / bench_page).write_text("written by zoo bench\n")
    with ResultsStore(copy) as store:
        rendered = render_leaderboards(store, out, html_dir=tmp / "site")
    return out, [path for path in rendered if path.is_relative_to(out)]


@pytest.fixture(scope="module")
def fresh_site(fresh):
    """(folder, every path of the site) rendered with the boards above, beside them as the
    committed site is beside the committed boards."""
    out, _ = fresh
    site = out.parent / "site"
    return site, sorted(path for path in site.rglob("*") if path.is_file())


def test_committed_leaderboards_equal_a_fresh_render(fresh):
    from PIL import Image

    out, rendered = fresh
    assert rendered, "the published database has no completed runs"
    assert out / "README.md" in rendered
    missing, stale = [], []
    for page in rendered:
        name = page.relative_to(out).as_posix()
        committed = PUBLISHED / name
        if not committed.is_file():
            missing.append(name)
        elif page.suffix == ".png":
            # PNG bytes depend on the matplotlib and FreeType versions that drew them, so only
            # check that the committed plot is there and is a PNG, not pixel equality
            with Image.open(committed) as image:
                if image.format != "PNG":
                    stale.append(name)
        elif committed.read_text() != page.read_text():
            stale.append(name)
    assert not missing and not stale, (
        f"run `{REGENERATE}` and commit the result; rendered but not committed: {missing}; "
        f"stale or hand-edited: {stale}")


def test_no_committed_leaderboard_file_is_left_over_from_an_older_render(fresh):
    out, rendered = fresh
    expected = {page.relative_to(out).as_posix() for page in rendered} | set(BENCH_FILES)
    expected |= {grid for board in PUBLISHED.glob("var-*.md")  # copies of the runs' own grids
                 for grid in re.findall(r'<img src="([^"]+)"', board.read_text())}
    left_over = sorted(path.relative_to(PUBLISHED).as_posix()
                       for path in PUBLISHED.rglob("*") if path.is_file()
                       and path.relative_to(PUBLISHED).as_posix() not in expected)
    assert not left_over, f"committed but no longer rendered (delete them): {left_over}"


def test_every_sample_grid_a_published_board_shows_is_committed():
    for board in sorted(PUBLISHED.glob("var-*.md")):
        grids = re.findall(r'<img src="([^"]+)"', board.read_text())
        assert grids, f"{board.name} shows no sample grid"
        for grid in grids:
            assert (PUBLISHED / grid).is_file(), f"{board.name}: {grid} is missing"


def test_every_plot_a_published_board_links_is_committed():
    for board in sorted(PUBLISHED.glob("*.md")):
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", board.read_text()):
            assert (PUBLISHED / link).is_file(), f"{board.name}: {link} is missing"


def test_the_committed_site_equals_a_fresh_render(fresh_site):
    site, rendered = fresh_site
    assert site / "index.html" in rendered
    missing = [p.name for p in rendered if not (PUBLISHED_SITE / p.name).is_file()]
    stale = [p.name for p in rendered if (PUBLISHED_SITE / p.name).is_file()
             and (PUBLISHED_SITE / p.name).read_text() != p.read_text()]
    left_over = sorted({p.name for p in PUBLISHED_SITE.rglob("*") if p.is_file()}
                       - {p.name for p in rendered})
    assert not missing and not stale and not left_over, (
        f"run `{REGENERATE}` and commit the result; rendered but not committed: {missing}; "
        f"stale or hand-edited: {stale}; no longer rendered: {left_over}")


def test_every_plot_and_board_file_the_site_links_is_committed():
    for page in sorted(PUBLISHED_SITE.glob("*.html")):
        for link in re.findall(r'(?:src|href)="(\.\./[^"#]+)"', page.read_text()):
            assert (PUBLISHED_SITE / link).resolve().is_file(), f"{page.name}: {link} is missing"
