"""Training block by block on a dask cluster: ``partial_fit`` driven by dask-ml's
``Incremental``, then the array scored block by block.

The rows of ``load_digits`` other than the digit 0 (scaled to [0, 1]) are the normal rows; a
fifth of them and every 0 are kept aside as new rows. The training rows become a dask array
of blocks of 200 rows (standing in for data too large for one machine's memory, such as
``da.from_zarr``); ``Incremental`` trains ``LangevinFlowPriorGenerator`` on it on a
``LocalCluster`` of two worker processes, two blocks a call, then the new rows are scored
with ``map_blocks``. It prints how well the scores find the 0s (AUROC) and the
share of new normal rows ``predict`` flags, beside ``fit`` on the same rows in memory.

    pip install torch==2.13.0 -e '.[dask]'
    python examples/blockwise_dask.py
"""

import warnings

import dask.array as da
import numpy as np
import torch
from dask_ml.wrappers import Incremental
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from _quick import settings
from skflowgen import LangevinFlowPriorGenerator

cfg = settings(full=dict(passes=5, every=1), quick=dict(passes=1, every=4))


def main():
    torch.set_num_threads(1)  # small networks: one thread each, as the workers run them
    X, y = load_digits(return_X_y=True)
    X, y = X[::cfg.every] / 16.0, y[::cfg.every]
    order = np.random.RandomState(0).permutation(len(X))
    X, y = X[order], y[order]
    normal = np.flatnonzero(y != 0)
    train, new_normal = normal[:int(0.8 * len(normal))], normal[int(0.8 * len(normal)):]
    new = np.r_[new_normal, np.flatnonzero(y == 0)]
    is_zero = y[new] == 0
    # novelty=True: predict is calibrated for new rows (rows held out of training set offset_)
    model = LangevinFlowPriorGenerator(image_shape=(1, 8, 8), max_iter=cfg.passes,
                                       novelty=True, random_state=0)

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        blocks = da.from_array(X[train], chunks=(200, X.shape[1]))
        incremental = Incremental(model, shuffle_blocks=True, random_state=0)
        # as many blocks a call as workers: no worker holds blocks ahead of the training
        starts = np.arange(0, blocks.numblocks[0], 2)
        rng = np.random.RandomState(0)
        for _ in range(cfg.passes):  # a pass over the blocks, one partial_fit a block
            for start in rng.permutation(starts):
                incremental.partial_fit(blocks.blocks[start:start + 2])
        blockwise = incremental.estimator_
        scores = da.from_array(X[new], chunks=(200, X.shape[1])).map_blocks(
            blockwise.score_samples, drop_axis=1, dtype=np.float64).compute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        in_memory = model.fit(X[train])
    print(f"{len(train)} training rows in {blocks.numblocks[0]} blocks, "
          f"{blockwise.n_iter_} partial_fit calls")
    print("How each model scores the new rows:")
    for name, fitted, score in [("Incremental", blockwise, scores),
                                ("fit in memory", in_memory, in_memory.score_samples(X[new]))]:
        flagged = np.mean(fitted.predict(X[new_normal]) == -1)
        print(f"{name:>14}: AUROC of the 0s {roc_auc_score(is_zero, -score):.3f}, "
              f"new normal rows flagged {flagged:.3f} (contamination={fitted.contamination})")


if __name__ == "__main__":  # the workers are processes that import this file
    main()
