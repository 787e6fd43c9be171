"""Model selection: GridSearchCV over the latent size and the Langevin step size.

GridSearchCV tunes a ``MinMaxScaler -> LangevinFlowPriorGenerator`` pipeline on
``load_breast_cancer`` (569 rows, 30 features) with no ``scoring`` argument: it
ranks the candidates by the model's own ``score``, the mean log-likelihood of
the held-out fold, an importance-sampled estimate of ``log p(x)`` whatever
``score_method`` says: it is comparable across ``n_components``, where the log
joint ``log p(x, z~)`` at one inferred latent is not (the latent density
changes dimension with ``n_components``).

The grid crosses ``n_components`` with ``step_size``, the Langevin step in
units of the approximate posterior scale. The script prints the best candidate
and its score on a held-out test set, and writes ``grid_search.png``: the mean
cross-validated score of every candidate (error bars: the standard deviation
over the folds).

    python examples/plot_grid_search.py
"""

import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from _quick import settings
from skflowgen import LangevinFlowPriorGenerator

plt.switch_backend("Agg")
torch.set_num_threads(1)  # tiny networks: one thread is as fast, and steady on a busy machine
warnings.filterwarnings("ignore", category=ConvergenceWarning)  # epochs capped on purpose
cfg = settings(full=dict(max_iter=20, n_components=[2, 4, 8], step_size=[0.5, 1.0, 2.0]),
               quick=dict(max_iter=1, n_components=[2, 4], step_size=[0.5, 1.0]))

X, _ = load_breast_cancer(return_X_y=True)
X_train, X_test = train_test_split(X, test_size=0.25, random_state=0)

# Large batches keep the 3 x 9 fits fast.
pipeline = make_pipeline(MinMaxScaler(), LangevinFlowPriorGenerator(
    batch_size=256, max_iter=cfg.max_iter, random_state=0))
param_grid = {"langevinflowpriorgenerator__n_components": cfg.n_components,
              "langevinflowpriorgenerator__step_size": cfg.step_size}
start = time.perf_counter()
search = GridSearchCV(pipeline, param_grid, cv=3).fit(X_train)
print(f"{len(search.cv_results_['params'])} candidates x 3 folds in "
      f"{time.perf_counter() - start:.1f} s")
best = {name.split("__")[1]: value for name, value in search.best_params_.items()}
print(f"best: {best}, mean CV log-likelihood {search.best_score_:.2f}")
print(f"held-out test log-likelihood of the refitted best model: "
      f"{search.score(X_test):.2f}")

results = search.cv_results_
n_components = np.array(results["param_langevinflowpriorgenerator__n_components"], dtype=int)
step_sizes = np.array(results["param_langevinflowpriorgenerator__step_size"], dtype=float)
dodge = {step: 1.04 ** (i - (len(cfg.step_size) - 1) / 2)  # keeps the error bars apart
         for i, step in enumerate(cfg.step_size)}
fig, ax = plt.subplots(figsize=(7, 4))
for step in cfg.step_size:
    rows = step_sizes == step
    ax.errorbar(n_components[rows] * dodge[step], results["mean_test_score"][rows],
                yerr=results["std_test_score"][rows], marker="o", capsize=3,
                label=f"step_size={step}")
ax.set(xscale="log", xticks=cfg.n_components, xticklabels=cfg.n_components,
       xlabel="n_components",
       ylabel="mean CV score (marginal log-likelihood per row)",
       title="GridSearchCV of LangevinFlowPriorGenerator")
ax.minorticks_off()
ax.plot(best["n_components"] * dodge[best["step_size"]], search.best_score_, "k*",
        markersize=14, label="best", zorder=3)
ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5))
fig.tight_layout()
fig.savefig("grid_search.png", dpi=90)
print("wrote grid_search.png")
