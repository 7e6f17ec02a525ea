"""Talk to `edgelm serve` with the official OpenAI client (any OpenAI-compatible app works the same way).

    edgelm serve PACKAGE --port 8000 &
    python examples/openai_client.py http://127.0.0.1:8000
"""

import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="not-needed")
model = client.models.list().data[0].id
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "What is the capital of France?"}],
    max_tokens=64, stream=True, stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices:
        delta = chunk.choices[0].delta
        reasoning = (delta.model_extra or {}).get("reasoning_content")  # reasoning models only
        print(reasoning or delta.content or "", end="", flush=True)
    if chunk.usage:
        print(f"\n[{chunk.usage.completion_tokens} tokens]")
