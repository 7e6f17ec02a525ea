"""`edgelm chat`: an interactive terminal chat with a package.

Keeps the conversation (each turn reuses the cache of the ones before), streams the answer, shows a
reasoning model's chain of thought dimmed; /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops the
answer being written, not the program.
"""

from __future__ import annotations

import sys

from edgelm.cli.common import add_load_flags, add_sampling_flags, load_model, sampling_kwargs, subcommand

DIM, PLAIN = "\x1b[2m", "\x1b[0m"
HELP = "/reset: new conversation · /exit: quit · Ctrl-C: stop the answer"


def run(args) -> int:
    model = load_model(args)
    kw = sampling_kwargs(args)
    model.request([0], **kw)  # bad flags fail now, not at the first question
    start = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    tty = sys.stdout.isatty()
    print(f"edgelm chat: {args.package} on {model.provider.spec.name} ({HELP})", file=sys.stderr)
    while True:
        try:
            line = input("> " if sys.stdin.isatty() else "")
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print(f"\n({HELP})", file=sys.stderr)
            continue
        text = line.strip()
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(start)
            print("(new conversation)", file=sys.stderr)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": line})
        history.append({"role": "assistant", "content": _answer(model, history, kw, tty)})


def _answer(model, history: list, kw: dict, tty: bool) -> str:
    """Stream the answer to the conversation; returns its text (what was written, if Ctrl-C stopped it)."""
    content, thinking = [], False
    events = model.chat(history, stream=True, **kw)
    try:
        for e in events:
            if e.reasoning:
                if not thinking:
                    sys.stdout.write(DIM if tty else "[thinking] ")
                    thinking = True
                sys.stdout.write(e.reasoning)
            if e.content:
                if thinking:
                    sys.stdout.write(PLAIN if tty else "\n[/thinking]")
                    sys.stdout.write("\n")
                    thinking = False
                sys.stdout.write(e.content)
                content.append(e.content)
            sys.stdout.flush()
        reason = e.finish_reason
    except KeyboardInterrupt:
        events.close()
        reason = "stopped"
    if thinking:
        sys.stdout.write(PLAIN if tty else "\n[/thinking]")
    sys.stdout.write("\n")
    if reason not in ("stop",):
        print(f"({reason})", file=sys.stderr)
    sys.stdout.flush()
    return "".join(content)


EXAMPLES = (
    "edgelm chat pkg",
    'edgelm chat pkg --system "Answer in one sentence." --temperature 0.7',
)


def add(sub) -> None:
    p = subcommand(sub, "chat", "interactive terminal chat (history, streaming, /reset, /exit)", EXAMPLES)
    p.add_argument("--system", help="a system message that starts every conversation")
    add_sampling_flags(p)
    add_load_flags(p, default_ep="auto")
    p.set_defaults(func=run)
