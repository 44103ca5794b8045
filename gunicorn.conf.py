"""gunicorn -c gunicorn.conf.py: the settings of wxpush serve, kept in the package."""
from webhook.server.gunicorn_conf import *  # noqa: F401,F403
