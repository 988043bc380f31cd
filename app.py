"""Entry point for the `flask` CLI (`flask --app app ...`); plain, no gevent patching."""

from silk import create_app
from silk.config import ConfigError

try:
    app = create_app()
except ConfigError as err:
    raise SystemExit(str(err)) from None  # one line on stderr, no traceback
