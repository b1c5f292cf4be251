"""The README's Python example runs as written (issue 15 item 8)."""

import re
from pathlib import Path

from conftest import REPO


def test_readme_python_example_runs(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has a python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (Path(tmp_path) / "checkpoints" / "quick" / "config.json").exists()


def test_top_level_train_is_the_function():
    from interp import train
    from interp.training import train as train_fn

    assert train is train_fn and callable(train)
