"""The runtime must be embeddable: importing and using it pulls in neither torch nor transformers."""

import subprocess
import sys

CODE = """
import sys
import edgelm.runtime
from edgelm.runtime import load
m = load(sys.argv[1])
m.generate("Hello", max_new_tokens=4)
heavy = sorted(n for n in sys.modules if n.split(".")[0] in ("torch", "transformers", "optimum", "onnx"))
print(",".join(heavy))
"""


def test_runtime_imports_no_torch_or_transformers(builds):
    package = builds.package("tiny-llama", "int4")
    proc = subprocess.run([sys.executable, "-c", CODE, str(package)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
