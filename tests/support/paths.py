"""Where the repository and the installed ``cryptobeam`` command are."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The command installed next to the interpreter that runs the tests, so the tests run the code of this venv.
CLI = str(Path(sys.executable).parent / "cryptobeam")
BUNDLED = str(ROOT / "data" / "*.zip")
