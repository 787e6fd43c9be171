"""Deep latent generative models with normalizing-flow priors, as scikit-learn estimators."""

from .glf import GenerativeLatentFlow
from .impute import GenerativeImputer
from .langevin_flow_prior import LangevinFlowPriorGenerator

__version__ = "0.1.0"

__all__ = ["GenerativeImputer", "GenerativeLatentFlow", "LangevinFlowPriorGenerator", "__version__"]
