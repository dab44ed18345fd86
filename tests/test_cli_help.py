"""`egd --help` and every command's help render (argparse expands % in help strings: a bare one crashes --help)."""

import argparse

import pytest

from egalitarian.cli import build_parser, main


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _subparsers(sub))


def test_every_commands_help_renders():
    parser = build_parser()
    text = parser.format_help()
    names = dict(_subparsers(parser))
    assert {"run", "tune", "handcheck", "robustness", "transfer"} <= set(names)
    for name in names:
        assert name.split()[0] in text
    for name, sub in names.items():
        assert sub.format_help().startswith("usage:"), name


def test_egd_help_exits_0(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "handcheck" in capsys.readouterr().out
