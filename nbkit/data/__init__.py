"""Data: synthetic manifolds (2-D and lifted) and image sets via torchvision."""

# image sets as tensors: load_images, stl10_fold, load_bundled_mnist,
# split_bundled_mnist, Standardizer, standardize, validation_split, to_device,
# minibatches, DATASETS, NUM_CLASSES (the list is images.__all__)
from nbkit.data.images import *  # noqa: F403

# synthetic disjoint manifolds (paper Fig. 4) and their lift to high-D
from nbkit.data.synthetic import (  # noqa: F401
    MANIFOLDS,
    N_MANIFOLDS,
    Lift,
    lift,
    make_manifolds,
    make_spirals,
)
