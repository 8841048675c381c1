"""The gateway stays light: importing it loads neither torch nor transformers."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT


def test_gateway_imports_no_torch_or_transformers() -> None:
    code = (
        "import sys, api.app, api.__main__\n"
        "api.app.create_app()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
