"""The leaderboard website (`zoo leaderboard --html DIR`): its pages hold the database's rows, it
renders the same bytes twice, it shows database text without running it, and in a real headless
browser (Debian's chromium with selenium) its tables sort and filter.

The browser test skips where no chromium is installed, except where ZOO_REQUIRE_BROWSER=1 (CI
installs chromium and sets it, so there it cannot skip)."""

from __future__ import annotations

import os
import re
import shutil
import statistics
from pathlib import Path

import pytest

from zoo.cli import main
from zoo.runs.ids import protocol_id
from zoo.runs.results import ResultsStore, RunRecord

QUICK = {"epochs": 3, "batch_size": 64, "lr": 0.01}
FULL = {"epochs": 30, "batch_size": 64, "lr": 0.01}
ENV = {"zoo": "0.1.0", "torch": "2.4.1", "timm": "1.0.9", "python": "3.11.7", "device": "cpu",
       "git_commit": "abc1234"}
CONFIG = {"data": {"name": "digits", "train": 1257, "val": 180, "test": 360}}
# test accuracy per (act, seed): golu is clearly above gelu (Holm-significant), relu is not
ACCURACY = {"gelu": [0.900, 0.902, 0.898], "golu": [0.950, 0.951, 0.949],
            "relu": [0.899, 0.905, 0.893]}


def run(act: str, seed: int, acc: float, arch: str = "vit", protocol: dict = QUICK
        ) -> RunRecord:
    pid = protocol_id(protocol)
    return RunRecord(
        run_id=f"digits-{arch}-{act}-default-none-s{seed}-{pid[:8]}", arch=arch, act=act,
        init="default", quant="none", dataset="digits", seed=seed, protocol=protocol,
        protocol_id=pid, status="completed",
        metrics={"test_acc": acc, "params": 1000, "train_time_s": 10.0, "samples_per_s": 99.0},
        environment=ENV, config=CONFIG, run_dir=f"runs/x-{act}-{seed}",
        started_at="2025-01-01T00:00:00+00:00", finished_at="2025-01-01T00:10:00+00:00")


def database(path: Path, extra: list[RunRecord] = ()) -> Path:
    with ResultsStore(path) as store:
        for act, accs in ACCURACY.items():
            for seed, acc in enumerate(accs):
                store.upsert(run(act, seed, acc))
                store.upsert(run(act, seed, acc - 0.1, arch="resnet"))
        for seed in range(2):  # a second protocol on the vit board
            store.upsert(run("gelu", seed, 0.97, protocol=FULL))
        for record in extra:
            store.upsert(record)
    return path


def render(tmp_path: Path, extra: list[RunRecord] = ()) -> Path:
    db = database(tmp_path / "results.sqlite", extra)
    site = tmp_path / "site"
    assert main(["leaderboard", "--db", str(db), "--to", str(tmp_path / "boards"),
                 "--html", str(site)]) == 0
    return site


def visible_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_the_site_has_an_index_a_page_per_board_and_per_activation(tmp_path):
    site = render(tmp_path)
    index = (site / "index.html").read_text()
    for board in ("digits-vit", "digits-resnet"):
        assert f'href="{board}.html"' in index and (site / f"{board}.html").is_file()
    assert 'href="act-golu.html"' in index and (site / "act-golu.html").is_file()
    assert (site / "site.js").is_file() and (site / "site.css").is_file()


def test_a_board_page_holds_every_row_with_its_interval_and_holm_mark(tmp_path):
    site = render(tmp_path)
    page = (site / "digits-vit.html").read_text()
    rows = re.findall(r'<tr id="([^"]+)" data-act="([^"]+)"[^>]*class="([^"]*)"', page)
    # 3 acts under QUICK, gelu under FULL
    assert sorted(act for _, act, _ in rows) == ["gelu", "gelu", "golu", "relu"]
    classes = {anchor: cls for anchor, _, cls in rows}
    golu = next(a for a in classes if "-golu-" in a)
    relu = next(a for a in classes if "-relu-" in a)
    assert "holm" in classes[golu] and "holm" not in classes[relu]
    mean = 100 * statistics.fmean(ACCURACY["golu"])
    assert f"{mean:.2f} ± " in page
    assert page.count("<svg") == 4  # an interval for every row with 2+ seeds: all four
    # the protocol blocks and plots are inline
    assert "Hyperparameters:" in page and '<img src="../boards/digits-vit/' in page


def test_an_activation_page_links_its_rows_on_every_board(tmp_path):
    site = render(tmp_path)
    page = (site / "act-golu.html").read_text()
    assert "x * exp(-exp(-x))" in page and "arxiv.org/abs/2502.03654" in page
    links = re.findall(r'href="(digits-[a-z]+\.html#[^"]+)"', page)
    assert sorted(link.split(".html")[0] for link in links) == ["digits-resnet", "digits-vit"]
    for link in links:
        board, anchor = link.split("#")
        assert f'id="{anchor}"' in (site / board).read_text()


def test_the_same_database_renders_the_same_bytes(tmp_path):
    first = render(tmp_path / "a")
    second = render(tmp_path / "b")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_text_from_the_database_is_shown_never_run(tmp_path):
    hostile = run("gelu", 5, 0.9)
    hostile.environment = {**ENV, "device": "<script>alert('x')</script>"}
    site = render(tmp_path, [hostile])
    for page in site.glob("*.html"):
        assert "<script>alert" not in page.read_text(), page.name
    assert "&lt;script&gt;alert" in (site / "digits-vit.html").read_text()


def test_an_unwritable_site_folder_is_a_one_line_error(tmp_path, capsys):
    db = database(tmp_path / "results.sqlite")
    (tmp_path / "file").write_text("not a folder")
    assert main(["leaderboard", "--db", str(db), "--to", str(tmp_path / "boards"),
                 "--html", str(tmp_path / "file")]) != 0
    err = capsys.readouterr().err
    assert "--html" in err and len(err.strip().splitlines()) == 1


# --- in a real browser -------------------------------------------------------------------------


def chromium():
    """A headless Chromium driven by selenium, or a skip (a failure under ZOO_REQUIRE_BROWSER)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        binary = None
    if not (binary and driver):
        if os.environ.get("ZOO_REQUIRE_BROWSER") == "1":
            pytest.fail("ZOO_REQUIRE_BROWSER=1 but chromium, chromedriver or selenium is missing")
        pytest.skip("no chromium and chromedriver here (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def shown_rows(browser):
    from selenium.webdriver.common.by import By

    return [row for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr[data-act]")
            if row.is_displayed()]


def cell_number(row, column: int) -> float:
    from selenium.webdriver.common.by import By

    return float(row.find_elements(By.TAG_NAME, "td")[column].get_attribute("data-value"))


def test_in_a_browser_the_board_sorts_filters_and_matches_the_database(tmp_path):
    site = render(tmp_path)
    browser = chromium()  # first: it skips where selenium is not installed
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    try:
        browser.get((site / "index.html").resolve().as_uri())
        browser.find_element(By.CSS_SELECTOR, 'a[href="digits-vit.html"]').click()
        assert browser.title == "digits / vit"
        assert len(shown_rows(browser)) == 4

        # sort the quick section by its mean: ascending, then descending
        section = browser.find_element(By.ID, f"protocol-{protocol_id(QUICK)}")
        header = section.find_element(By.CSS_SELECTOR, "th.value")
        value_column = [th.text for th in section.find_elements(By.CSS_SELECTOR, "th")].index(
            header.text)
        header.click()
        rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
        means = [cell_number(row, value_column) for row in rows]
        assert means == sorted(means) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        rows = section.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [cell_number(row, value_column) for row in rows] == sorted(means, reverse=True)

        # filter to one activation: its rows only, with the database's numbers
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-filter="act"]')
               ).select_by_value("golu")
        shown = shown_rows(browser)
        assert [row.get_attribute("data-act") for row in shown] == ["golu"]
        with ResultsStore(tmp_path / "results.sqlite") as store:
            stored = [r.metrics["test_acc"] for r in store.runs()
                      if r.act == "golu" and r.arch == "vit"]
        assert cell_number(shown[0], value_column) == pytest.approx(
            100 * statistics.fmean(stored), abs=1e-9)
        assert browser.find_element(By.ID, "shown").text == "1 row shown"

        # the protocol filter hides the other section: gelu under FULL is the only row left
        # (these protocols are not named ones, so the filter offers their ids)
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-filter="act"]')
               ).select_by_value("gelu")
        Select(browser.find_element(By.CSS_SELECTOR, 'select[data-filter="protocol"]')
               ).select_by_value(protocol_id(FULL))
        shown = shown_rows(browser)
        assert len(shown) == 1 and cell_number(shown[0], value_column) == pytest.approx(97.0)
        screenshot = tmp_path / "board.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000

        # the act's page links back to its row on each board
        shown[0].find_element(By.CSS_SELECTOR, "td a").click()
        assert browser.title.startswith("gelu")
        links = browser.find_elements(By.CSS_SELECTOR, "#appearances a")
        assert {link.text for link in links} == {"digits-vit", "digits-resnet"}
        assert not [entry for entry in browser.get_log("browser")
                    if entry["level"] == "SEVERE"]
    finally:
        browser.quit()
