"""Leaderboards rendered from the results database.

Imports run one way, bottom to top:
- `stats`, `formatting`, `plots`: numbers, text and pictures from plain values;
- `records` (what the boards read from run records), then `markdown` and `files` (the markdown
  blocks and the CSV/JSON/index text every board shares);
- one module per kind of board: `classification`, `init_grid`, `quant`, `generation`;
- `render`: `zoo leaderboard`, every kind into one folder.
"""
