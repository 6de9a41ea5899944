"""The README's roles table names the viewer's read-only verbs as ``natsflow auth`` does."""

from __future__ import annotations

import re
from pathlib import Path

from natsflow.service.roles import READ_VERBS

README = Path(__file__).parents[2] / "README.md"


def test_the_readme_names_every_read_only_verb_of_the_viewer() -> None:
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `viewer`"))
    match = re.search(r"natsflow\.api\.\{([^}]*)\}", row)
    assert match is not None, row
    assert set(match[1].split(",")) == READ_VERBS
