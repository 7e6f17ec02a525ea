"""A multi-turn chat in a few lines: streaming, reasoning apart from the answer, cache reuse between turns.

    python examples/chat.py PACKAGE
"""

import sys
import threading

import edgelm

model = edgelm.load(sys.argv[1])  # ep="auto": the best provider this machine has for the package
history = [{"role": "system", "content": "You are a concise assistant."}]
for question in ["What is the capital of France?", "And of Italy?"]:
    history.append({"role": "user", "content": question})
    print(f"> {question}")
    answer = []
    for event in model.chat(history, stream=True, max_new_tokens=64, stop=["\n\n\n"]):
        if event.reasoning:  # reasoning models (DeepSeek-R1-Distill, Qwen3): the chain of thought, apart
            print(f"\x1b[2m{event.reasoning}\x1b[0m", end="", flush=True)
        print(event.content, end="", flush=True)
        answer.append(event.content)
    print(f"\n[{event.finish_reason}; {event.usage.prompt_tokens} prompt tokens, "
          f"{event.usage.cached_tokens} reused from the turn before]")
    history.append({"role": "assistant", "content": "".join(answer)})

# Cancel from another thread (a UI's stop button): the generation ends before its next token.
stop = threading.Event()
threading.Timer(0.05, stop.set).start()
result = model.chat(history + [{"role": "user", "content": "Tell me a long story."}], cancel=stop,
                    max_new_tokens=2000)
print(f"\nstopped: {result.finish_reason}, after {result.usage.completion_tokens} tokens")
