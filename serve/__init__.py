"""edgelm.serve: an OpenAI-compatible local HTTP server for one edgelm package, with a web chat page.

An extra (`pip install edgelm[serve]`: Starlette + uvicorn): the runtime never imports it, so an app that
embeds the runtime does not carry a web stack. Its names are imported when first used, so the CLI can read
the defaults in `edgelm.serve.limits` without loading the web stack.

    edgelm serve PACKAGE [--host 127.0.0.1] [--port 8000]
    # then any OpenAI client: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")
"""

__all__ = ["Running", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":
        from edgelm.serve.app import create_app

        return create_app
    if name in ("Running", "serve"):
        from edgelm.serve import server

        return getattr(server, name)
    raise AttributeError(f"module 'edgelm.serve' has no attribute {name!r}")
