"""The console script's exit (``cli/process_exit.py``): handlers run, output arrives, the status
is the command's, and a running non-daemon thread still gets joined."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import pytest

from mlflow_autotts.cli.process_exit import exit_code


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (2, 2), (7, 7)])
def test_exit_code_is_what_sys_exit_gives(code, status):
    assert exit_code(code) == status


def test_a_message_exit_prints_it_and_gives_1(capsys):
    assert exit_code("bad things") == 1
    assert capsys.readouterr().err == "bad things\n"


def test_exit_now_runs_the_exit_handlers_flushes_and_keeps_the_status():
    p = _python("import atexit\n"
                "from mlflow_autotts.cli.process_exit import exit_now\n"
                "atexit.register(print, 'handler ran')\n"
                "print('buffered output', end=' ')\n"
                "import sys; print('to stderr', end='', file=sys.stderr)\n"
                "exit_now(3)\n")
    assert p.returncode == 3
    assert p.stdout == "buffered output handler ran\n"
    assert p.stderr == "to stderr"


def test_exit_now_waits_for_a_running_non_daemon_thread():
    # the thread can only finish once the main thread has ended: still running when
    # exit_now is called, whatever the timing, and its line is printed only if the
    # process waits for it
    p = _python("import threading\n"
                "from mlflow_autotts.cli.process_exit import exit_now\n"
                "t = threading.Thread(target=lambda: (threading.main_thread().join(), print('thread finished')))\n"
                "t.start()\n"
                "exit_now(4)\n")
    assert p.returncode == 4
    assert p.stdout == "thread finished\n"


def test_the_module_entry_point_keeps_the_commands_output_and_status(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "--version"], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0
    assert ok.stdout == f"python -m mlflow_autotts.cli, version {version('mlflow-autotts')}\n"
    missing = tmp_path / "nothing-here.parquet"
    bad = subprocess.run([sys.executable, "-m", "mlflow_autotts.cli", "evaluate", str(missing), "-c", "cmc",
                          "--no-mlflow"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [f"error: {missing}: no such file or folder"]
