"""Langevin inference overhead: skflowgen's ``transform`` against a plain-torch loop.

Both run the same K noise-free Langevin steps on ``log p(z) + log N(x; g(z), sigma^2 I)`` over
the same fitted networks and the same rows, interleaved in one process: skflowgen with its own
evaluation chunks (sized by memory), plain torch over all rows in one batch. The ratio
``skflowgen / plain torch`` is the package's overhead over its physical limit (one forward and
backward pass of the networks per step, no chunking).

    python benchmarks/langevin_speed.py                    # load_digits / 16, 1,797 x 64
    python benchmarks/langevin_speed.py --rows 20000 --features 20   # a synthetic table
"""

import argparse
import math
import statistics

import numpy as np
import torch

from _common import limit_threads, timed, write_report
from skflowgen import LangevinFlowPriorGenerator


def plain_torch_transform(model, x, n_steps, step, chunk):
    """The reference loop written directly in torch, chunk by chunk."""
    generator, flow, var = model.generator_, model.flow_, model.noise_.variance
    out = []
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        z = xb.new_zeros(1, len(xb), model.n_components_)  # the one member's latents
        for _ in range(n_steps):
            z.requires_grad_(True)
            log_p = flow.log_prob(z) - 0.5 * ((xb - generator(z)).square() / var).sum(dim=-1)
            (grad,) = torch.autograd.grad(log_p.sum(), z)
            z = (z + 0.5 * step ** 2 * grad).detach()
        out.append(z[0])
    return torch.cat(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None,
                        help="rows of a synthetic table (default: load_digits instead)")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--n-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="benchmarks/RESULTS.md")
    args = parser.parse_args()
    _limits = limit_threads(args.threads)

    if args.rows is None:
        from sklearn.datasets import load_digits
        X, data = (load_digits().data / 16).astype(np.float32), "load_digits / 16"
    else:
        rng = np.random.RandomState(0)
        X = (rng.randn(args.rows, 5) @ rng.randn(5, args.features)).astype(np.float32)
        data = "a synthetic table"
    # inference from z = 0 for n_steps, the computation of the plain loop
    model = LangevinFlowPriorGenerator(n_steps=args.n_steps, inference_steps=args.n_steps,
                                       chain_init="prior", max_iter=2, random_state=0,
                                       device="cpu").fit(X[:2000])
    x = model._to_model(torch.from_numpy(X))  # the networks' units, as transform sees them
    step = model.step_size * model._posterior_scale()
    package = lambda: model.transform(X)  # noqa: E731
    chunk = model._chunk_size()
    plain = lambda: plain_torch_transform(model, x, args.n_steps, step, len(x))  # noqa: E731
    z_pkg, z_ref = package(), plain().numpy()
    max_diff = float(np.abs(z_pkg - z_ref).max())
    times = {"skflowgen": [], "plain torch": []}
    for _ in range(args.repeats):
        times["skflowgen"].append(timed(package)[1])
        times["plain torch"].append(timed(plain)[1])
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["skflowgen"] / med["plain torch"]
    per_step_us = 1e6 * med["skflowgen"] / (args.n_steps * math.ceil(len(X) / chunk))
    rows = [[k, f"{med[k]:.3f}", f"{len(X) / med[k]:,.0f}"] for k in times]
    write_report(
        args.output, "langevin-speed", "Langevin inference overhead", args.threads,
        f"`transform` of {len(X):,} rows x {X.shape[1]} features ({data}), K = {args.n_steps} "
        f"noise-free steps, skflowgen in chunks of {chunk} rows (sized by memory), plain torch "
        f"in one batch of all rows, n_components = {model.n_components_}, median of "
        f"{args.repeats} interleaved repeats.",
        ["implementation", "seconds", "rows / s"], rows,
        f"**Ratio skflowgen / plain torch: {ratio:.3f}** (goal: at most 1.10). One Langevin "
        f"step of one chunk ({min(chunk, len(X))} rows): {per_step_us:.0f} us. Largest difference "
        f"between the two latents: {max_diff:.2e}.")


if __name__ == "__main__":
    main()
