"""Test collection: nbval runs the teaching notebooks as they are.

The experiment notebooks default to the paper's full settings, so nbval
skips them; tests/test_experiment_notebooks.py runs them with papermill
at profile="smoke" instead.
"""

collect_ignore_glob = [
    "notebooks/cifar.ipynb",
    "notebooks/stl.ipynb",
    "notebooks/mnist.ipynb",
    "notebooks/sweep.ipynb",
    "notebooks/results.ipynb",
    "notebooks/*.py",
    "runs/*",
    "binder/*",
]
