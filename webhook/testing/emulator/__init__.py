"""WeChat's server API, emulated for tests: ``Emulator`` (a Falcon app) and its records."""

from webhook.testing.emulator.core import ROUTES, Emulator
from webhook.testing.emulator.state import Call

__all__ = ["Emulator", "Call", "ROUTES"]
