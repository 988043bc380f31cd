"""The operator's console: server-rendered pages at /admin/ for admin keys only."""
