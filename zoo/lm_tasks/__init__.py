"""Offline lm-evaluation-harness tasks shipped with zoo (YAML task configs over local data).

    shakespeare_ppl      perplexity of the held-out Shakespeare plays (the corpus's test split:
                         Macbeth, The Tempest), one document per play, `loglikelihood_rolling`;
                         word_perplexity, byte_perplexity, bits_per_byte.
    shakespeare_speaker  300 four-way multiple-choice items from the same two plays: after the
                         block that precedes a speech, which character speaks it? Each choice is
                         the speech in the corpus's own layout, `NAME:` then the lines, so a
                         model trained on zoo's Shakespeare needs no prompt format; acc (chance
                         0.25), acc_norm (lm-eval's per-character normalization, which here
                         mostly favours long names: read acc).

The YAML files in this folder are ordinary lm-eval task configs: `zoo eval RUN --lm-eval
shakespeare_ppl` runs them through `zoo.evaluate.lm_eval`, and plain lm-eval finds them
with `--include_path <this folder>`. Their data are the jsonl files under data/, written by
`python -m zoo.lm_tasks.generate` from `load_text_dataset("shakespeare")["test"]` and committed
(about 0.3 MB together); `python -m zoo.lm_tasks.generate --check` says whether they are still
what the corpus gives. The YAMLs name their files relative to this folder; `loader.load_jsonl`
(the tasks' `custom_dataset`) resolves them here, so they load offline from any working folder.
"""

from __future__ import annotations

import re
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
DATA_DIR = TASKS_DIR / "data"
_TASK_LINE = re.compile(r"^task:\s*(\S+)\s*$", re.M)


def local_task_names() -> list[str]:
    """The task names declared by the YAML files of this folder, sorted."""
    names = []
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        match = _TASK_LINE.search(path.read_text(encoding="utf-8"))
        if match:
            names.append(match.group(1))
    return sorted(names)
