"""`dsocr serve`: an OpenAI-compatible HTTP server with persisted document jobs and a web page."""
