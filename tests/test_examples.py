"""Every script in examples/ runs in quick mode and leaves the files it promises.

Each script runs in a fresh interpreter (``sys.executable``) with
``SKFLOWGEN_QUICK=1`` (tiny settings, see ``examples/_quick.py``), inside a
temporary working directory where it writes its figures.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import THREADS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# What each example must leave behind: the PNG files it writes to the working
# directory, or a line it must print when it writes none. "grids" are figures of image tiles.
EXPECTED = {
    "blockwise_dask.py": {"line": "How each model scores the new rows:"},
    "demo.py": {"png": ["demo_samples.png"], "grids": ["demo_samples.png"]},
    "persistence.py": {"line": "OK"},
    "plot_anomaly_detection.py": {"png": ["anomaly_scores.png", "anomaly_roc.png"]},
    "plot_grid_search.py": {"png": ["grid_search.png"]},
    "plot_image_anomalies.py": {"png": ["image_anomalies.png"], "grids": ["image_anomalies.png"]},
    "plot_imputation.py": {"png": ["imputation.png"], "grids": ["imputation.png"]},
    "plot_samples.py": {"png": ["sampling_grid.png", "sampling_interpolation.png"],
                         "grids": ["sampling_grid.png", "sampling_interpolation.png"]},
}
# A figure of image tiles is readable when the tiles cover the figure: at least 5% of its
# pixels are ink (not near-white). Tiles shrunk to specks by a layout that makes room for
# wide titles leave well under 1% (0.4% for the demo figure that had this fault).
MIN_INK = 0.05


def ink_fraction(path):
    """Share of the PNG's pixels darker than near-white."""
    import matplotlib.image
    rgb = matplotlib.image.imread(path)[..., :3]
    return float((rgb.mean(axis=2) < 0.9).mean())

SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py") if not path.name.startswith("_"))


def test_every_example_is_listed():
    assert set(SCRIPTS) == set(EXPECTED), (
        "EXPECTED must name the outputs of every script in examples/ (and no other)")


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_in_quick_mode(script, tmp_path):
    env = {**os.environ, "SKFLOWGEN_QUICK": "1", "MPLBACKEND": "Agg",
           "OMP_NUM_THREADS": str(THREADS),  # tiny networks: one is fastest (conftest.py)
           # the package from this checkout, installed or not
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{script} failed:\n{output}"
    expected = EXPECTED.get(script, {})
    for name in expected.get("png", []):
        figure = tmp_path / name
        assert figure.is_file(), f"{script} did not write {name}:\n{output}"
        assert figure.stat().st_size > 0, f"{script} wrote an empty {name}"
    for name in expected.get("grids", []):
        ink = ink_fraction(tmp_path / name)
        assert ink >= MIN_INK, f"{script}: the image tiles of {name} are specks ({ink:.1%} ink)"
    if "line" in expected:
        assert expected["line"] in result.stdout.splitlines(), \
            f"{script} did not print {expected['line']!r}:\n{output}"
