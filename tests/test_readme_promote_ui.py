"""The README's "Promote in the UI" block, run as written by bash in an empty folder: a real
``mlflow server`` allowed to send webhooks, ``autotts gatekeeper install`` and ``serve``, two
registered versions and ``@candidate`` set on each through the REST call the UI's alias editor
makes. Only the two port numbers change, as the README says to when they are taken."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_autotts.live.server import free_port
from tests.helpers import mlflow_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PORTS = re.compile(r"^export MLFLOW_PORT=(\d+) GATEKEEPER_PORT=(\d+)$", re.M)


def promote_block() -> str:
    """The bash block of the README's "Promote in the UI" section."""
    text = (ROOT / "README.md").read_text()
    section = re.split(r"\n##+ ", text.split("### Promote in the UI", 1)[1], maxsplit=1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section must hold one bash block"
    assert PORTS.search(blocks[0]), "the block must choose its two ports on its first line, as its text says"
    return blocks[0]


def test_the_readmes_promote_in_the_ui_block_runs_as_written(data_dir, tmp_path):
    mlflow_port, gatekeeper_port = free_port(), free_port()
    block = PORTS.sub(f"export MLFLOW_PORT={mlflow_port} GATEKEEPER_PORT={gatekeeper_port}", promote_block())
    script = tmp_path / "promote.sh"
    script.write_text(block)
    work = tmp_path / "empty"
    work.mkdir()
    env = mlflow_env("unused", data_dir)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # a fresh shell: the block sets its own
        env.pop(name, None)
    proc = subprocess.Popen(["bash", "-euo", "pipefail", str(script)], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    server = f"http://127.0.0.1:{mlflow_port}"  # the registry too: this process may have another set
    try:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{out[-3000:]}\n{err[-5000:]}"
        client = MlflowClient(tracking_uri=server, registry_uri=server)
        champion = client.get_model_version_by_alias("autotts-controller", "champion").version
        refused = client.get_model_version("autotts-controller", "2").tags
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        log = work / "gatekeeper.log"
        pytest.fail(f"the block did not end within 600 s\n{out[-2000:]}\n{err[-3000:]}\n"
                    f"{log.read_text()[-3000:] if log.is_file() else 'no gatekeeper.log'}")
    finally:  # the block leaves both servers running, as a user would: its process group goes
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    # the block's last line prints the gatekeeper's decisions: v1 promoted, v2 refused (and the
    # gatekeeper's own move of @champion, a delivery too, kept as it is)
    decided = re.findall(r"decided \S+: (\w+) v(\d+):", out)
    assert ("promoted", "1") in decided and ("refused", "2") in decided, out[-3000:]
    assert set(decided) <= {("promoted", "1"), ("refused", "2"), ("kept", "1")}, out[-3000:]
    assert str(champion) == "1"
    assert refused["autotts.gatekeeper.decision"] == "refused" and refused["autotts.gatekeeper.reason"]
