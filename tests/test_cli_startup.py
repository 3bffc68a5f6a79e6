"""``autotts`` start-up: commands load when they run, and the root help still lists them right."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from mlflow_autotts.cli.lazy import LazyCommand, LazyCommands, LazyGroup
from mlflow_autotts.cli.main import COMMANDS, main

HEAVY = ("mlflow", "numpy", "pandas", "scipy", "mlflow_autotts.evaluation", "mlflow_autotts.replay.runner",
         "mlflow_autotts.live", "mlflow_autotts.search", "mlflow_autotts.collect", "mlflow_autotts.tracking")


def _loaded_after(args: list[str]) -> set[str]:
    """Module names (among ``HEAVY``) imported by running ``autotts ARGS`` in a fresh process."""
    code = ("import json, sys\nfrom mlflow_autotts.cli.main import main\n"
            "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            f"heavy = {HEAVY!r}\n"
            "print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))))")
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return set(json.loads(p.stdout.strip().splitlines()[-1]))


def test_root_help_imports_no_command():
    assert _loaded_after(["--help"]) == set()


def test_a_command_imports_its_own_stack_only():
    loaded = _loaded_after(["evaluate", "--help"])
    assert "mlflow_autotts.evaluation" in loaded
    # MLflow loads when a run is logged, scipy when a controller first needs it
    assert not {m for m in loaded if m.split(".")[0] in ("mlflow", "scipy")}
    assert not {m for m in loaded if m.startswith(("mlflow_autotts.live", "mlflow_autotts.search",
                                                   "mlflow_autotts.collect"))}


def test_root_help_lists_what_the_commands_themselves_say():
    """The lazy listing equals click's own listing of the loaded commands, so a changed
    docstring without a matching COMMANDS entry fails here."""
    lazy = CliRunner().invoke(main, ["--help"], terminal_width=100).output
    eager = click.Group("autotts", commands={n: main.commands[n] for n in COMMANDS},
                        help=main.help)
    ctx = click.Context(eager, info_name="autotts", terminal_width=100)
    formatter = ctx.make_formatter()
    eager.format_commands(ctx, formatter)
    listing = formatter.getvalue()
    assert listing.strip() and listing in lazy
    for name, spec in COMMANDS.items():
        cmd = main.commands[name]
        assert " ".join(cmd.help.split("\n\n")[0].split()) == spec.help, name
        assert cmd.name == name


def test_lazy_commands_behave_like_a_dict():
    cmds = LazyCommands({"x": LazyCommand("mlflow_autotts.cli.live", "live_group", "Live.")})
    assert list(cmds) == ["x"] and len(cmds) == 1 and "x" in cmds
    assert cmds.short_help("x", 80) == "Live."  # listed without importing
    assert cmds["x"].name == "live"
    assert cmds.get("nope") is None
    with pytest.raises(KeyError):
        cmds["nope"]
    extra = click.Command("extra", help="Added later.")
    cmds["extra"] = extra
    assert list(cmds) == ["x", "extra"] and cmds.short_help("extra", 80) == "Added later."
    del cmds["x"]
    assert list(cmds) == ["extra"]
    with pytest.raises(KeyError):
        del cmds["x"]


def test_unknown_command_is_clicks_usage_error():
    r = CliRunner().invoke(main, ["evaluat"])
    assert r.exit_code == 2 and "No such command 'evaluat'" in r.output


def test_group_subclass_still_maps_autotts_errors_to_one_line():
    from mlflow_autotts.errors import AutoTTSError

    @click.command("boom")
    def boom() -> None:
        raise AutoTTSError("bad input")

    group = LazyGroup("g", commands=LazyCommands({}))
    group.add_command(boom)
    r = CliRunner().invoke(group, ["boom"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: bad input"
