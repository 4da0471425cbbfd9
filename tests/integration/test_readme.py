"""The README's code runs as printed."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_blocks_run(index):
    code = BLOCKS[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    if "import dask" in code:
        pytest.importorskip("dask.array")
    if "from hypothesis" in code:
        pytest.skip("a pattern for the reader's own tests (my_scan is theirs)")
    exec(compile(code, f"README.md block {index}", "exec"), {})
