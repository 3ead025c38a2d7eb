"""The embedded default tasks' data, shipped inside the package: the text task's pairs and
held-out questions and the ``embedded-ric`` run (``data/``, card in ``data/README.md``), and the
image set drawn in code (``shapes``). The recipes that run them are in ``ric.recipes``."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
TRAIN_PAIRS = DATA_DIR / "pairs.jsonl"
HELDOUT_QUESTIONS = DATA_DIR / "questions_heldout.jsonl"
TRAIN_QUESTIONS = DATA_DIR / "questions_train.jsonl"  # also what `ric demo` calibrates on
