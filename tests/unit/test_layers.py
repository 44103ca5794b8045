"""Imports follow the data flow (docs/architecture.md): the contracts live in setup.cfg."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "setup.cfg"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_surface_resolves_and_stays_light():
    code = ("import sys, webhook; import webhook.routing.router, webhook.push.crypto; "
            "assert 'falcon' not in sys.modules and 'requests' not in sys.modules; "
            "[getattr(webhook, n) for n in webhook.__all__]; print(len(webhook.__all__))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
