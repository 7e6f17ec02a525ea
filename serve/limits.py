"""The server's defaults, defined once (the app and the CLI read them here)."""

MAX_BODY = 1 << 20  # bytes of a request body (a long chat history is far below)
MAX_QUEUE = 16  # requests that may wait for the model while one generates; more get HTTP 429
PORT = 8000
