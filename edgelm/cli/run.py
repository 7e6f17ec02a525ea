"""`edgelm run`: generate from a package, streaming the text."""

from __future__ import annotations

import json
import sys

from edgelm.cli.common import add_load_flags, add_sampling_flags, load_model, sampling_kwargs, subcommand


def run(args) -> int:
    model = load_model(args)
    kw = {**sampling_kwargs(args), "ignore_eos": args.ignore_eos}
    if args.chat:
        events = model.chat([{"role": "user", "content": args.prompt}], stream=True, reuse_cache=False, **kw)
    else:
        events = model.complete(args.prompt, stream=True, **kw)
    if args.json:
        ids = model.encode_prompt(args.prompt, chat=args.chat)
        out, content, reasoning = [], [], []
        for e in events:
            out += e.token_ids
            content.append(e.content)
            reasoning.append(e.reasoning)
        record = {"prompt_ids": ids, "token_ids": out, "text": "".join(content), "finish_reason": e.finish_reason}
        if e.speculation is not None:
            record["speculation"] = {"runs": e.speculation.runs, "proposed": e.speculation.proposed,
                                     "accepted": e.speculation.accepted}
        if model.manifest.reasoning is not None and args.chat:
            record["reasoning"] = "".join(reasoning)
        print(json.dumps(record, ensure_ascii=False))
        return 0
    for e in events:
        if e.reasoning:
            sys.stderr.write(e.reasoning)  # the chain of thought goes to stderr: stdout holds the answer
            sys.stderr.flush()
        sys.stdout.write(e.content)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


EXAMPLES = (
    'edgelm run pkg --prompt "What is the capital of France?" --chat --max-new-tokens 64',
    'edgelm run pkg --prompt "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 1',
    'edgelm run pkg --prompt "List three colors" --chat --stop "3." --json',
    'edgelm run pkg --prompt "Summarise: ..." --chat --speculate prompt-lookup   # fp32, or --accuracy-level 1',
)


def add(sub) -> None:
    p = subcommand(sub, "run", "generate from a package, streaming the text", EXAMPLES)
    p.add_argument("--prompt", required=True, help="the text to continue, or with --chat the user's message")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the package's chat template")
    add_sampling_flags(p)
    p.add_argument("--ignore-eos", action="store_true", help="do not stop at end-of-sequence tokens")
    add_load_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print prompt ids, token ids, text and finish reason (and reasoning) as JSON")
    p.set_defaults(func=run)
