"""Server-rendered pages: registration and the dashboard."""
