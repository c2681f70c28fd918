"""The README's examples stay true to the code: every command line it shows parses with the CLI's
own parser, and every pyfastviz import, function and keyword its Python blocks use exists."""

import ast
import functools
import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest

from pyfastviz.cli import build_parser, subcommands

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def command_lines() -> list[str]:
    """Each `pyfastviz ...` (or `torchrun ... -m pyfastviz.cli ...`) line of the bash blocks,
    continuations joined, comments dropped, optional [--flags] kept as given."""
    commands = []
    for block in code_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip().replace("[", "").replace("]", "")
            if line.startswith("pyfastviz "):
                commands.append(line.removeprefix("pyfastviz "))
            elif "-m pyfastviz.cli " in line:
                commands.append(line.split("-m pyfastviz.cli ", 1)[1])
    return commands


@pytest.mark.parametrize("command", command_lines())
def test_every_command_line_in_the_readme_parses(command):
    try:
        build_parser().parse_args(shlex.split(command))
    except SystemExit:
        pytest.fail(f"the README's `pyfastviz {command}` does not parse")


def test_the_readme_shows_every_command():
    shown = {shlex.split(command)[0] for command in command_lines()}
    assert shown == set(subcommands(build_parser()))


class PyfastvizCalls(ast.NodeVisitor):
    """Collects (call text, callable, positional count, keyword names) for calls of the names a
    block imports from pyfastviz (`pyfastviz.saliency(...)`, `inspect.pca(...)`, `stylize(...)`,
    `Occlusion(net).attribute(...)`)."""

    def __init__(self):
        self.names, self.calls = {}, []

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.startswith("pyfastviz"):
                self.names[alias.asname or alias.name] = importlib.import_module(alias.name)

    def visit_ImportFrom(self, node):
        if (node.module or "").startswith("pyfastviz"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"from {node.module} import {alias.name}: no such name"
                self.names[alias.asname or alias.name] = getattr(module, alias.name)

    def resolve(self, node):
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self.resolve(node.value.func if isinstance(node.value, ast.Call) else node.value)
            if inspect.ismodule(owner) or inspect.isclass(owner):
                assert hasattr(owner, node.attr), f"{ast.unparse(node)}: no such name"
            if inspect.ismodule(owner):
                return getattr(owner, node.attr)
            if inspect.isclass(owner) and isinstance(node.value, ast.Call):  # Class(...).method(...)
                return functools.partial(getattr(owner, node.attr), None)
        return None

    def visit_Call(self, node):
        function = self.resolve(node.func)
        starred = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        if callable(function) and not starred:
            self.calls.append((ast.unparse(node), function, len(node.args), [k.arg for k in node.keywords]))
        self.generic_visit(node)


def readme_calls():
    calls = []
    for block in code_blocks("python"):
        visitor = PyfastvizCalls()
        visitor.names["pyfastviz"] = importlib.import_module("pyfastviz")
        visitor.visit(ast.parse(block))
        calls += visitor.calls
    return calls


def test_every_pyfastviz_call_in_the_readme_matches_its_signature():
    calls = readme_calls()
    assert len(calls) > 40  # the tour's calls were found
    for text, function, positional, keywords in calls:
        try:
            inspect.signature(function).bind(*range(positional), **dict.fromkeys(keywords))
        except TypeError as error:
            pytest.fail(f"README: {text}: {error}")
