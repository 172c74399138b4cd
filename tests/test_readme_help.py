"""The help is the single source of what each option does and defaults to, and the README agrees with it.

Conventions the help texts follow (and this file checks):

- ``(default X)`` / ``default: X``: X is the option's argparse default (``%(default)s`` in the code);
- ``the run's KEY; pespot's default V``: the option defaults to the run's config key KEY, and V is that key's value
  in a new config (``pespot.config.run_default``);
- an option without an argparse default never prints a bare number as its default.

And the README: every option its command table and its ``pespot ...`` commands name exists in that command's
parser; the demo's numbers (steps, clip length, minutes) are the code's.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from pespot.cli import COMMANDS, build_parser
from pespot.config import Config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


PARSERS = subparsers()


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {opt: action for action in parser._actions for opt in action.option_strings}


def shown(value: object) -> str:
    """A default as a help text prints it."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_value(key: str) -> object:
    value: object = Config()
    for part in key.split("."):
        value = getattr(value, part)
    return value


# ------------------------------------------------------------------------------------------------------------
# the help


def help_texts() -> list[tuple[str, argparse.Action, str]]:
    out = []
    for name, parser in PARSERS.items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help and action.help is not argparse.SUPPRESS:
                text = " ".join(formatter._expand_help(action).split())
                out.append((name, action, text))
    return out


@pytest.mark.parametrize("command,action,text", help_texts(),
                         ids=lambda x: x if isinstance(x, str) and len(x) < 20 else "")
def test_every_printed_default_is_the_real_one(command, action, text):
    where = f"pespot {command} {'/'.join(action.option_strings) or action.dest}"
    has_default = not (action.default is None or action.default is False or action.default == argparse.SUPPRESS
                       or action.default == [])
    for match in re.finditer(r"the run's ([a-z_]+(?:\.[a-z_]+)+); pespot's default ([^\s;,)]+)", text):
        key, value = match.groups()
        assert value == ("none" if config_value(key) is None else shown(config_value(key))), (where, text)
    for match in re.finditer(r"(?<!pespot's )\bdefault:? ([^;)]+)", text):
        said = match.group(1)
        if has_default:
            assert said.startswith(shown(action.default)), (where, text)
        else:
            message = f"{where}: prints a number as the default of an option without one"
            assert not re.match(r"[-+]?\d", said), (message, text)
    for match in re.finditer(r"(\S+) \(default\)", text):
        assert match.group(1) == shown(action.default), (where, text)


def test_nms_window_help_says_where_its_default_comes_from():
    # A run's nms.json (eval --choose-nms --run, eval.choose_nms) overrides eval.nms_window: the help must say so.
    for command in ("infer", "stream"):
        (action,) = [a for a in PARSERS[command]._actions if "--nms-window" in a.option_strings]
        text = " ".join(action.help.split())
        assert "nms.json" in text and "eval.nms_window" in text, (command, text)
        assert "(default 1)" not in text


def test_demo_help_and_readme_say_the_codes_numbers():
    from pespot.config import preset_defaults
    from pespot.demo import DEFAULT_STEPS, MEASURED_MINUTES

    synthetic = preset_defaults("synthetic")
    steps, clip, minutes = DEFAULT_STEPS["small"], synthetic.model.clip_len, round(MEASURED_MINUTES["small"])
    demo = PARSERS["demo"]
    text = " ".join(demo.format_help().split())
    assert f"{steps} steps" in text and f"about {minutes} minutes" in text and f"clip length {clip}" in text
    assert set(re.findall(r"about (\d+) minutes", text)) == {str(minutes)}
    assert re.findall(r"clip length (\d+)", text) == [str(clip)]
    # the README: Quick start, the demo's paragraph
    assert re.search(rf"make demo .*about {minutes} minutes", README)
    demo_section = README[README.index("**The demo**"):README.index("**Accuracy benchmark**")]
    assert f"for {steps} steps" in demo_section and f"clip {clip}" in demo_section
    assert f"{MEASURED_MINUTES['small']} minutes" in demo_section


def test_demo_steps_are_what_the_help_says():
    from pespot.demo import MIN_STEPS_PER_EPOCH, demo_steps

    assert demo_steps(480, 8) == (8, 60)  # the default: the preset's 8 epochs
    assert demo_steps(500, 8) == (5, 100)  # the most epochs <= 8 that divide 500
    assert demo_steps(7, 8) == (1, 7)  # no split into epochs of at least 4 steps: one epoch
    (action,) = [a for a in PARSERS["demo"]._actions if "--steps" in a.option_strings]
    text = " ".join(action.help.split())
    assert "exactly that many" in text and "at most the synthetic preset's 8" in text
    assert f"at least {MIN_STEPS_PER_EPOCH} steps" in text


# ------------------------------------------------------------------------------------------------------------
# the README


def readme_commands() -> list[str]:
    """Every ``pespot CMD ...`` the README names: the command table's rows, the code blocks' lines (a pipe's
    right-hand side included) and inline code spans."""
    found = []
    for row in re.findall(r"^\| (`pespot .*?`) \|", README, flags=re.MULTILINE):  # the usage cell
        found.append(row.replace("\\|", "|").strip("`"))
    for block in re.findall(r"```\n(.*?)```", README, flags=re.DOTALL):
        for line in block.splitlines():
            line = line.split("#", 1)[0]
            for part in line.split("|"):
                match = re.search(r"(?:^|\s)(pespot \S.*)", part)
                if match:
                    found.append(match.group(1))
    found += re.findall(r"`(pespot [a-z][^`]*)`", README)
    return found


def test_readme_has_commands_to_check():
    commands = readme_commands()
    assert len(commands) > 30
    assert {c.split()[1] for c in commands} >= {name for name, _, _ in COMMANDS}


@pytest.mark.parametrize("line", readme_commands())
def test_every_readme_option_exists(line):
    words = line.split()
    command = words[1].strip("`")
    assert command in PARSERS, line
    known = options(PARSERS[command])
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line):
        assert option in known, f"README: `{line}`: pespot {command} has no {option}"
    # `--opt a|b|c`: every value named is one of the option's choices
    for option, values in re.findall(r"(--[a-z][a-z0-9-]*) ([a-z0-9_-]+(?:\|[a-z0-9_.-]+)+)", line):
        action = known[option]
        if action.choices:
            for value in values.split("|"):
                if ".." in value:  # at1..at5
                    start, end = value.split("..")
                    assert start in action.choices and end in action.choices, (line, value)
                else:
                    assert value in action.choices, (line, value)


def test_readme_table_names_what_the_tour_uses():
    table = "\n".join(re.findall(r"^\| `pespot .*$", README, flags=re.MULTILINE))
    for row_start, option in (("pespot infer", "--frames"), ("pespot stream", "--threshold"),
                              ("pespot synth", "--format"), ("pespot info", "--num-classes"),
                              ("pespot eval TRUTH", "--nms-method"), ("pespot train", "--quiet")):
        rows = [r for r in table.splitlines() if r.startswith(f"| `{row_start}")]
        assert any(option in r for r in rows), (row_start, option)
    assert "at1..at5" in table


# ------------------------------------------------------------------------------------------------------------
# the code


def test_functions_fit_on_a_screen():
    """No function in src/ is longer than 120 lines (one that is has more than one job)."""
    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 120:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_tour_ends_on_a_run_that_learned():
    """The tour's short training learns nothing; the steps that show results (infer on a split or videos, eval
    --plot, stream, export) use the demo's run and data, where `pespot demo` writes them, and the tour says so."""
    import inspect

    from pespot.demo import run_demo

    tour = README[README.index("## A 5-minute tour"):README.index("## Troubleshooting")]
    (block,) = re.findall(r"```\n(.*?)```", tour, flags=re.DOTALL)
    lines = [line.split("#", 1)[0] for line in block.splitlines()]
    (train,) = [i for i, line in enumerate(lines) if "pespot train" in line]
    (out,) = [a for a in PARSERS["demo"]._actions if "--out" in a.option_strings]
    assert 'data_root, run_dir = out / "data", out / "run"' in inspect.getsource(run_demo)
    demo_run, demo_data = f"{out.default}/run", f"{out.default}/data"
    later = [line for line in lines[train + 1:] if re.search(r"pespot (infer|stream|export|eval)", line)]
    weak = [line for line in later if "runs/tour" in line]
    assert len(weak) == 1 and "pespot infer" in weak[0]  # one infer on the tour's run, to see what 20 steps give
    for line in later:
        if line not in weak:
            assert demo_run in line or f"{demo_data}/" in line, line
    assert any("--plot" in line and f"{demo_data}/test.json" in line for line in later)
    assert f"`{demo_run}`" in tour and "make demo" in tour
