"""``autotts live demo-model`` prints the model folders live serving and the README use."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mlflow_autotts.cli.main import main


def test_demo_model_command_prints_the_cached_model_folders(demo_model, tiny_model):
    for args, expected in ((["live", "demo-model"], demo_model), (["live", "demo-model", "--tiny"], tiny_model)):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        folder = Path(res.output.strip())
        assert folder == Path(expected) and (folder / "config.json").is_file()
        assert (folder / "tokenizer_config.json").is_file()
