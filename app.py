"""Entry point for the `flask` CLI (`flask --app app ...`); plain, no gevent patching."""

from silk import create_app

app = create_app()
