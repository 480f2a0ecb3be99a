"""Writes the data of zoo's local lm-eval tasks from the Shakespeare corpus's test split.

    python -m zoo.lm_tasks.generate            # (re)write zoo/lm_tasks/data/*.jsonl
    python -m zoo.lm_tasks.generate --check    # exit 1 if the committed files differ

Both files come from `load_text_dataset("shakespeare")["test"]` (Macbeth and The Tempest, the
plays no zoo language model trains on) and nothing else, and the construction is fixed: no
random generator, every choice is made by ordering on a SHA-256 digest of (SEED, play, block
index, ...), so the same corpus always gives byte-identical files on any Python version.

shakespeare_ppl.jsonl: one line per play, {"title", "text"}, the text exactly as in the corpus.

shakespeare_speaker.jsonl: PER_PLAY items per play, in the play's order, each

    {"id", "play", "context", "speech", "speakers": [4 names], "label"}

- A play's text is split into blocks at blank lines; a speech is a block whose first line is
  `NAME:` (see zoo.sources.shakespeare for the layout).
- The cast of a play: speakers of at least MIN_SPEECHES speeches, groups ("ALL", "A & B") left
  out. Macbeth has 17 such characters, The Tempest 12.
- Eligible speeches: by a cast member, not the play's first block, and SPEECH_CHARS[0] to
  SPEECH_CHARS[1] characters long once stage directions (`[...]`) are removed from them (so a
  direction naming someone cannot give the answer away). PER_PLAY of them are chosen, by digest.
- `speech`: the speech's lines without directions; `context`: the block just before it,
  verbatim (a speech with its speaker, a stage direction or a heading), cut to its last lines
  within CONTEXT_CHARS characters, then a blank line.
- `speakers`: the true speaker and 3 other cast members of the same play, chosen by digest, in
  digest order; `label` is the true speaker's index.

The lm-eval task (shakespeare_speaker.yaml) asks for the continuation of `context` among the
choices `NAME:\\nspeech` (`loader.speaker_choices`): the speech in the corpus's own layout under
each candidate's name. The choices share the speech, so the model compares
P(name, speech | context) across names. Chance is 25%. (lm-eval's acc_norm divides by the
choice's length in characters, nearly the same for every choice but for the name: it mostly
favours longer names; acc is the measure.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from zoo.data.text.corpus import load_text_dataset
from zoo.lm_tasks import DATA_DIR
from zoo.runs.files import atomic_write_text

SEED = 20240601
PER_PLAY = 150
MIN_SPEECHES = 10
SPEECH_CHARS = (40, 400)
CONTEXT_CHARS = 400
CHOICES = 4
PPL_FILE = "shakespeare_ppl.jsonl"
SPEAKER_FILE = "shakespeare_speaker.jsonl"

_DIRECTION = re.compile(r"\[[^\]]*\]")


def _digest(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in (SEED, *parts)).encode("utf-8")).hexdigest()


def test_plays() -> list[dict[str, str]]:
    """The corpus's test split: [{"title", "text"}, ...] in split order."""
    test = load_text_dataset("shakespeare")["test"]
    return [{"title": row["title"], "text": row["text"]} for row in test]


def ppl_documents(plays: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"title": p["title"], "text": p["text"]} for p in plays]


def _is_group(name: str) -> bool:
    return name.upper() == "ALL" or "&" in name or " and " in name


def _speech(block: str) -> tuple[str, str] | None:
    """(speaker, lines without stage directions) of a speech block, None for other blocks."""
    lines = block.split("\n")
    if len(lines) < 2 or not lines[0].endswith(":"):
        return None
    body = [" ".join(_DIRECTION.sub(" ", line).split()) for line in lines[1:]]
    return lines[0][:-1], "\n".join(line for line in body if line)


def _context(block: str) -> str:
    """The block's last lines within CONTEXT_CHARS characters (at least its last line's tail)."""
    kept: list[str] = []
    size = 0
    for line in reversed(block.split("\n")):
        if kept and size + len(line) + 1 > CONTEXT_CHARS:
            break
        kept.insert(0, line[-CONTEXT_CHARS:])
        size += len(kept[0]) + 1
    return "\n".join(kept) + "\n\n"


def speaker_items(plays: list[dict[str, str]]) -> list[dict[str, Any]]:
    items = []
    for play in plays:
        title = play["title"]
        blocks = play["text"].rstrip("\n").split("\n\n")
        speeches = {i: s for i, b in enumerate(blocks) if (s := _speech(b)) is not None}
        counts: dict[str, int] = {}
        for speaker, _ in speeches.values():
            counts[speaker] = counts.get(speaker, 0) + 1
        cast = sorted(s for s, n in counts.items() if n >= MIN_SPEECHES and not _is_group(s))
        eligible = [i for i, (speaker, text) in speeches.items()
                    if i > 0 and speaker in cast
                    and SPEECH_CHARS[0] <= len(text) <= SPEECH_CHARS[1]]
        if len(eligible) < PER_PLAY or len(cast) < CHOICES:
            raise RuntimeError(f"{title}: {len(eligible)} eligible speeches and {len(cast)} "
                               f"cast members; need {PER_PLAY} and {CHOICES}")
        chosen = sorted(sorted(eligible, key=lambda i: _digest(title, i))[:PER_PLAY])
        for i in chosen:
            speaker, text = speeches[i]
            others = sorted((c for c in cast if c != speaker),
                            key=lambda c: _digest(title, i, "distractor", c))[:CHOICES - 1]
            names = sorted([speaker, *others], key=lambda c: _digest(title, i, "order", c))
            items.append({"id": f"{title}#{i}", "play": title, "context": _context(blocks[i - 1]),
                          "speech": text, "speakers": names, "label": names.index(speaker)})
    return items


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def generated_files() -> dict[str, str]:
    """File name -> the text it should hold."""
    plays = test_plays()
    return {PPL_FILE: _jsonl(ppl_documents(plays)), SPEAKER_FILE: _jsonl(speaker_items(plays))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.lm_tasks.generate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the files on disk instead of writing them")
    parser.add_argument("--to", type=Path, default=DATA_DIR, help="output folder")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generated_files().items():
        path = args.to / name
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if args.check:
            if current != text:
                stale.append(name)
            continue
        atomic_write_text(path, text)
        print(f"wrote {path} ({len(text.encode('utf-8')):,} bytes, {text.count(chr(10))} lines)")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python -m zoo.lm_tasks.generate",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
