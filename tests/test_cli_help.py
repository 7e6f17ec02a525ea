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
