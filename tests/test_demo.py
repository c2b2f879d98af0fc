"""The README's first command: the demo tells the whole story and ends clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_story_end_to_end(integrity_postgres_url: str, tmp_path: Path) -> None:
    """In an empty folder: the reference project comes from the package, not the clone."""
    script = Path(sys.executable).parent / "alembic-integrity"
    result = subprocess.run([str(script), "demo", "--rows", "2000"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    for line in (
        "80, 100, 210, 530, 532, 534, 536, 540, 542, 546, 548, 550, 552, 562, 564, 574, 582, "
        "584, 584, 584, 584, 584, 584, 584",
        "identical to before the repair: yes",
        "replace (present with another definition",
        "repair ck_persistence_diagram_data_present: 6 row(s) changed",
        "nothing to do (present, same definition, valid)",
        "clean: nothing would fail",
    ):
        assert line in out, line
    assert list(tmp_path.iterdir()) == []  # and it leaves the folder as it found it
