"""nbkit: Neural Bayes (Arpit et al., 2020) for teaching and research."""

from . import bayes, losses, regularizers

__all__ = ["bayes", "losses", "regularizers", "ManifoldLabeler"]
__version__ = "0.1.0"


def __getattr__(name):
    # the estimator pulls in scikit-learn; import it only when asked for
    if name == "ManifoldLabeler":
        from .manifold import ManifoldLabeler

        return ManifoldLabeler
    raise AttributeError(f"module 'nbkit' has no attribute {name!r}")
