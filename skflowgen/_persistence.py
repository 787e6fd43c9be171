"""Pickling: the networks and optimizer states travel as one ``torch.save`` blob beside the
estimator's plain attributes, under a state format number that a load checks.
"""

import io

import torch

from ._training import torch_generator
from .scores import feature_maps

_STATE_FORMAT = 4  # 4: held-out rows set offset_; derived state follows the parameters
# parameters added within this state format, with the value that behaves as a pickle
# written before them did
_ADDED_PARAMETERS = {"n_prior_components": 1, "novelty": True, "n_jobs": None,
                     "mask_fraction": 0.0}
# fitted state added within this state format, as a pickle written before it behaves
# (n_samples_seen_: unknown then, counted from 0; _support: every column sampled continuous;
# _draws_noise: sample() returns the decoded mean on tables too)
_ADDED_STATE = {"_fitted_novelty": True, "_reference_counts": None, "_held_out_counts": None,
                "n_samples_seen_": 0, "_support": None, "_draws_noise": False}


class PersistenceMixin:
    """``__getstate__`` / ``__setstate__`` of :class:`~skflowgen._base.BaseLatentFlow`."""

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: the estimator keeps its modules
        if "flow_" not in state:
            return state
        # the kept rows' feature maps (3,136 floats a row on 28 x 28 images) are recomputed
        # from the rows at first use, as after set_params
        if "_derived_state" in state:
            state["_derived_state"] = {name: value for name, value in
                                       state["_derived_state"].items()
                                       if name != feature_maps.__name__}
        buffer = io.BytesIO()
        torch.save({
            "modules": {n: state.pop(n).state_dict() for n in self._network_names},
            "optimizers": [(o.state_dict(), s.state_dict()) for o, s in state.pop("_optimizers")],
        }, buffer)
        state["_torch_state"] = buffer.getvalue()
        state["_state_format"] = _STATE_FORMAT
        return state

    def __setstate__(self, state):
        blob = state.pop("_torch_state", None)
        if blob is None:
            super().__setstate__(state)
            return
        if state.pop("_state_format", None) != _STATE_FORMAT:
            raise ValueError(f"This {type(self).__name__} was pickled by an incompatible version "
                             "of skflowgen; refit it with the installed version.")
        added = {name: value for name, value in _ADDED_PARAMETERS.items()
                 if name in self._get_param_names()}
        state.pop("_sampling_flow_pending", None)  # the earlier sampling flow's, refitted no more
        # score_method='auto' ranked table rows by each estimator's likelihood before 'fused',
        # images by 'lof' before 'local'
        super().__setstate__({**added, **_ADDED_STATE, "_auto_table_score": self._likelihood_score,
                              "_auto_image_score": "lof", **state})
        try:
            saved = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
            generator = torch_generator(0, "cpu")
            self._build_modules(generator)
            # a flow refitted to the codes once sampled: sample() fits their mixture instead
            saved["modules"].pop("sampling_flow_", None)
            self._optimizers = self._make_optimizers()
            self._load_state(saved)
        except Exception as exc:  # a corrupt or foreign blob: say what failed
            raise ValueError(f"Could not restore the networks of this pickled "
                             f"{type(self).__name__}: {exc}") from exc
        for name in self._network_names:
            getattr(self, name).eval()
