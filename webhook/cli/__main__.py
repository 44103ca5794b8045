"""``python -m webhook.cli`` is ``wxpush``."""

import sys

from webhook.cli import main

sys.exit(main())
