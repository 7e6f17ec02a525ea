"""edgelm: export small language models to ONNX packages, run them on ONNX Runtime, benchmark them.

The spine shared by the three parts: the package manifest (`edgelm.manifest`), typed errors
(`edgelm.errors`) and the command line (`edgelm.cli`). The parts live in `edgelm.export`,
`edgelm.runtime` and `edgelm.bench`.
"""

__version__ = "0.1.0"
