"""Persistence: save a fitted model with joblib and load it in a fresh Python process.

Both estimators are fitted on ``load_digits`` (scaled to [0, 1]) and saved with
``joblib.dump``. A new interpreter (``sys.executable``) loads each file and
scores the same rows; the script asserts that ``score_samples`` comes back the
same up to float32 rounding (another process may sum in another order: another
thread count, or another machine) and prints OK. The networks travel as torch
state dicts, so a model fitted on a GPU loads on a CPU-only machine too.

    python examples/persistence.py
"""

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from _quick import settings
from skflowgen import GenerativeLatentFlow, LangevinFlowPriorGenerator

torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # epochs capped on purpose
cfg = settings(full=dict(max_iter=10, n_rows=500), quick=dict(max_iter=1, n_rows=200))

# What the fresh process runs: load each model, score the rows, save the scores.
LOAD_AND_SCORE = """
import sys, joblib, numpy as np
X = np.load(sys.argv[1])
for path in sys.argv[2:]:
    np.save(path + ".scores.npy", joblib.load(path).score_samples(X))
"""

X, _ = load_digits(return_X_y=True)
X = X[:cfg.n_rows] / 16.0
models = [GenerativeLatentFlow(n_components=8, max_iter=cfg.max_iter, random_state=0),
          LangevinFlowPriorGenerator(n_components=8, max_iter=cfg.max_iter, random_state=0)]

with tempfile.TemporaryDirectory() as tmp:
    np.save(Path(tmp, "X.npy"), X)
    paths = [str(Path(tmp, type(model).__name__ + ".joblib")) for model in models]
    expected = [model.fit(X).score_samples(X) for model in models]
    for model, path in zip(models, paths):
        joblib.dump(model, path)
    subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, str(Path(tmp, "X.npy")), *paths],
                   check=True)
    for model, path, scores in zip(models, paths, expected):
        name = type(model).__name__
        difference = np.abs(np.load(path + ".scores.npy") - scores).max()
        assert difference <= 1e-4 * np.abs(scores).max(), \
            f"{name}: scores changed after loading"
        print(f"{name}: {Path(path).stat().st_size / 1024:.0f} KiB on disk, score_samples "
              f"of {len(X)} rows the same after loading in a fresh process (largest "
              f"difference {difference:.1e})")
print("OK")
