"""Entry point for gunicorn (`gunicorn wsgi:app`): gevent patches everything first, and the
server's app leaves out what only the commands use (migrations)."""

from gevent import monkey

monkey.patch_all()

from silk import create_app  # noqa: E402 - must come after patching

app = create_app(serving=True)
