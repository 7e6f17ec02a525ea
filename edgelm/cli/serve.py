"""`edgelm serve`: an OpenAI-compatible HTTP server for one package, with a web chat page at /."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edgelm.cli.common import add_load_flags, speculate_option, subcommand
from edgelm.errors import UsageError


def run(args) -> int:
    try:
        from edgelm.serve import create_app, serve
        from edgelm.serve.server import LOOPBACK
    except ImportError as exc:
        raise UsageError(f"edgelm serve needs the [serve] extra ({exc.name} is missing): "
                         "pip install 'edgelm[serve]'") from None
    for flag, value, low in (("--port", args.port, 0), ("--max-queue", args.max_queue, 0),
                             ("--max-body", args.max_body, 1024)):
        if not low <= value <= (65535 if flag == "--port" else 1 << 30):
            raise UsageError(f"{flag} {value} is out of range")
    from edgelm.cli.common import load_model
    from edgelm.serve.guard import Access

    try:
        access = Access(tuple(args.allow_origin or ()), tuple(args.allow_host or ()),
                        args.api_key or os.environ.get("EDGELM_API_KEY") or None)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    model = load_model(args)
    model_id = args.model_id or Path(args.package).resolve().name
    speculate = speculate_option(args)
    model.request([0], speculate=speculate)  # checked now (a draft with another tokenizer), not per request
    app = create_app(model, model_id, max_queue=args.max_queue, max_body=args.max_body, speculate=speculate,
                     access=access)
    if args.host not in LOOPBACK and access.api_key is None:
        print(f"edgelm: warning: serving on {args.host}: anyone who can reach it can use the model "
              "(no --api-key)", file=sys.stderr)
    print(f"edgelm serve: {model_id} on {model.provider.spec.name} at http://{args.host}:{args.port} "
          f"(chat page: /, OpenAI API: /v1); Ctrl-C stops", file=sys.stderr)
    serve(app, args.host, args.port, log_level=args.log_level)
    return 0


EXAMPLES = (
    "edgelm serve pkg                      # then open http://127.0.0.1:8000",
    "edgelm serve pkg --port 9000 --model-id smollm2 --max-queue 8",
    "# any OpenAI client: OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='none')",
    "edgelm serve pkg --api-key \"$(openssl rand -hex 16)\"   # clients then send that key",
    "edgelm serve pkg --allow-origin http://localhost:3000   # a web app of yours on another port",
)


def add(sub) -> None:
    from edgelm.serve.limits import MAX_BODY, MAX_QUEUE, PORT

    p = subcommand(sub, "serve", "OpenAI-compatible local server (/v1/chat/completions) with a web chat page",
                   EXAMPLES)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=PORT, help=f"port (default {PORT})")
    p.add_argument("--speculate", metavar="SOURCE", help="speculative decoding for every request: prompt-lookup, "
                   "or a smaller package folder sharing the tokenizer (same answers greedily, faster where they quote "
                   "the prompt)")
    p.add_argument("--model-id", help="the model's name in the API (default: the package folder's name)")
    p.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                   help=f"requests that may wait for the model; more get HTTP 429 (default {MAX_QUEUE})")
    p.add_argument("--max-body", type=int, default=MAX_BODY, help=f"largest request body in bytes (default {MAX_BODY})")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a web origin whose pages may call the API (CORS), e.g. http://localhost:3000, or * "
                   "(repeatable; default: only the server's own chat page)")
    p.add_argument("--allow-host", action="append", metavar="NAME",
                   help="a host name the server answers to besides localhost and its address, e.g. my-box.local "
                   "(repeatable; other names get 403: DNS rebinding)")
    p.add_argument("--api-key", metavar="KEY", help="require Authorization: Bearer KEY on every /v1 route "
                   "(default: $EDGELM_API_KEY, else none); /health and the chat page stay open")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default warning; info logs each request)")
    add_load_flags(p, default_ep="auto")
    p.set_defaults(func=run)
