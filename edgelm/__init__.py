"""edgelm: export small language models to ONNX packages, run them on ONNX Runtime, benchmark them.

The spine shared by the three parts: the package manifest (`edgelm.manifest`), typed errors
(`edgelm.errors`) and the command line (`edgelm.cli`). The parts live in `edgelm.export`,
`edgelm.runtime` and `edgelm.bench`; `edgelm.load` is the runtime's, imported when first used (the spine
imports none of the parts).

    import edgelm
    model = edgelm.load("pkg")                      # ep="auto": the best provider this machine has
    print(model.chat([{"role": "user", "content": "Hi"}]).text)
"""

__version__ = "0.1.0"


def load(package, ep: str = "auto", **kwargs):
    """Load an edgelm package (see edgelm.runtime.load for the arguments); `ep` defaults to "auto"."""
    from edgelm.runtime import load as runtime_load

    return runtime_load(package, ep=ep, **kwargs)
