"""The command line explains itself: --version, help on every option of every subcommand, examples."""

import argparse

from edgelm.cli import SUBCOMMANDS, build_parser
from tests.conftest import run_cli


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_subcommand_has_help():
    found = subparsers()
    assert sorted(found) == sorted(SUBCOMMANDS)
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in found.items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help and a.help.strip())]
    assert missing == []


def test_every_subcommand_shows_examples():
    for name, p in subparsers().items():
        assert p.epilog and p.epilog.startswith("examples:") and f"edgelm {name}" in p.epilog, name


def test_version_names_edgelm_and_onnxruntime():
    import onnxruntime

    from edgelm import __version__

    proc = run_cli("--version", check=True)
    assert proc.stdout.startswith(f"edgelm {__version__} (") and f"onnxruntime {onnxruntime.__version__}" in proc.stdout


def test_top_level_help_is_written_for_users():
    proc = run_cli("--help", check=True)
    assert "lazily" not in proc.stdout and "edgelm demo" in proc.stdout and "--version" in proc.stdout


def test_foreign_warnings_need_verbose(monkeypatch, capsys):
    """numpy's own warnings ("divide by zero") are noise to a user: shown only with --verbose; edgelm's are."""
    import numpy as np

    from edgelm.cli import _one_line_warning
    from edgelm.runtime.model import ProviderFallbackWarning

    monkeypatch.delenv("EDGELM_VERBOSE", raising=False)
    numpy_file = np.__file__
    _one_line_warning(RuntimeWarning("divide by zero encountered in divide"), RuntimeWarning, numpy_file, 1)
    _one_line_warning(ProviderFallbackWarning("3 of 32 nodes fall back"), ProviderFallbackWarning, "x.py", 1)
    err = capsys.readouterr().err
    assert "divide by zero" not in err and "edgelm: warning: 3 of 32 nodes fall back" in err
    monkeypatch.setenv("EDGELM_VERBOSE", "1")
    _one_line_warning(RuntimeWarning("divide by zero encountered in divide"), RuntimeWarning, numpy_file, 1)
    assert "divide by zero" in capsys.readouterr().err


def test_the_qnn_banner_stays_out_of_the_terminal_unless_verbose(builds):
    """QNN's library prints "# LIBNATIVE ..." on stdout when it loads; edgelm keeps it out (stdout holds the
    answer), and shows it on stderr with -v."""
    import pytest

    from edgelm.errors import ProviderUnavailable
    from edgelm.runtime.providers import resolve

    try:
        resolve("qnn")
    except ProviderUnavailable as exc:
        pytest.skip(f"no QNN plugin here: {exc}")
    package = builds.package("tiny-llama", "fp32")
    args = ("run", package, "--prompt", "Hi", "--max-new-tokens", "2", "--ep", "qnn", "--no-strict")
    quiet = run_cli(*args, check=True)
    assert "LIBNATIVE" not in quiet.stdout + quiet.stderr
    loud = run_cli(*args, "-v", check=True)
    assert "LIBNATIVE" in loud.stderr and "LIBNATIVE" not in loud.stdout
