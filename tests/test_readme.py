"""Every Python block of the README runs as written, in order, in one namespace (a block may
use what an earlier one defined, as a reader running them one after the other would)."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks_and_stays_short():
    assert len(python_blocks()) >= 5
    assert len(README.read_text().splitlines()) < 200


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning",
                            "ignore::DeprecationWarning", "ignore::UserWarning")
def test_every_python_block_of_the_readme_runs():
    pytest.importorskip("dask_ml")
    namespace = {"__name__": "readme"}
    for number, block in enumerate(python_blocks(), start=1):
        with warnings.catch_warnings():
            exec(compile(block, f"README.md, Python block {number}", "exec"), namespace)
    # what the blocks promise
    labels = namespace["labels"]
    assert np.mean(labels == -1) == pytest.approx(0.1, abs=1 / len(labels))
    assert namespace["images"].shape == (36, 8, 8)
    assert np.isfinite(namespace["scores"]).all()
    assert namespace["model"].n_iter_ == 3 * 6  # 3 passes over the 6 blocks, an epoch each
