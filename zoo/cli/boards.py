"""`zoo leaderboard`: the boards, rendered from the results database."""

from __future__ import annotations

from zoo.boards.render import record_standard_grid, render_leaderboards
from zoo.errors import ZooError
from zoo.registry import ACTS
from zoo.runs.files import writable_folder
from zoo.runs.results import ResultsStore, results_path


def cmd_leaderboard(args) -> int:
    db = args.db or results_path(args.out)
    if not db.is_file():
        raise ZooError(f"no results database at {db}: train something first (`zoo train vit`)")
    writable_folder(args.to, "--to")
    if args.html is not None:
        writable_folder(args.html, "--html")
    with ResultsStore(db) as store:
        record_standard_grid(store, ACTS.names())
        written = render_leaderboards(store, args.to, html_dir=args.html)
    if not written:
        print(f"no completed runs in {db}; nothing to render")
    site = [path for path in written if path.suffix == ".html"]
    if site:
        print(f"wrote the site: {len(site)} pages in {args.html}, open {args.html / 'index.html'}")
    written = [path for path in written if path.suffix not in (".html", ".css", ".js")]
    pages = [path for path in written if path.suffix == ".md"]
    for path in pages:
        print(f"wrote {path}")
    if len(written) > len(pages):  # one CSV, JSON and plot per board: counted, not listed
        kinds = ", ".join(f"{sum(p.suffix == suffix for p in written)} {suffix[1:].upper()}"
                          for suffix in (".csv", ".json", ".png")
                          if any(p.suffix == suffix for p in written))
        print(f"wrote {kinds} file(s) beside them in {args.to}")
    return 0
