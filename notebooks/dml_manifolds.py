# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Disjoint manifold labelling with Neural Bayes-DML
#
# This notebook reproduces Fig. 4 of Arpit et al. (2020), "Neural Bayes".
# A network labels every point of a data set by the disjoint manifold it lies on,
# with no labels, by maximising a Jensen-Shannon divergence under a smoothness penalty.
# The live panel comes first; the sections after it explain, one idea at a time,
# why the method works and where it breaks.

# %%
import math
import time

import numpy as np
import torch

import nbkit
from nbkit.data import Lift, lift, make_manifolds
from nbkit.losses import dml_loss
from nbkit.manifold import baseline_labels, default_settings, label_tasks
from nbkit.metrics import adjusted_rand
from nbkit.viz import decision_figure, decision_grid, labels_grid_figure
from nbkit.widgets import ManifoldPanel

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
device

# %% tags=["parameters"]
seed = 0  # int: seeds data, lift rotation and networks
n_samples = 1000  # points per data set (the tests use 1000 too)
lift_dim = 512  # ambient dimension of the lifted sets (paper: 512)
beta = None  # float >= 0, or None for the per-K default (1.0 for K=2, 0.5 for K=3)
max_epochs = None  # epochs per restart, or None for the default (300 / 400)
n_restarts = None  # restarts always trained, None: 1 for K=2, 3 for K=3
hidden = (256, 256, 256, 256)  # MLP widths; the paper: (400, 400, 400, 400)
resolution = 80  # grid points per side of the decision-region plots
live_widget = True  # bool: build the interactive panel (False: static figure)
widget_samples = 500  # points per data set in the live panel
widget_epochs = 200  # epoch budget per change in the live panel
paper_settings = False  # True: 4 x 400 hidden units and up to 600 epochs

# %% [markdown]
# `paper_settings = True` switches to the paper's network and epoch budget;
# it is several times slower on a CPU and gives the same labels on these sets.

# %%
if paper_settings:
    hidden, max_epochs = (400, 400, 400, 400), 600
params = {"beta": beta, "max_epochs": max_epochs, "n_restarts": n_restarts}
params |= {"hidden": tuple(hidden), "device": device, "progress": False}
start_time = time.perf_counter()
params

# %% [markdown]
# ## Try it: the live beta panel
#
# Pick a data set, the number of manifolds, the smoothness weight beta,
# and 2-D or 512-D inputs.
# Each change retrains a network for a few seconds and redraws the regions.
# Move beta to 0 on the circles and the labels stop following the rings;
# move it far up and the network gives up and labels everything the same.
# Without a live frontend (a headless run) the panel still trains once,
# and the static figures below tell the same story.

# %%
panel = ManifoldPanel(
    n_samples=widget_samples, max_epochs=widget_epochs, hidden=hidden, seed=seed
)
panel if live_widget else panel.static_figure()

# %% [markdown]
# ## 1. What is a disjoint manifold?
#
# Definition 1 of the paper: a set $S \subset \mathbb{R}^n$ is connected
# (a disjoint manifold) if any two of its points are joined
# by a continuous path that stays inside $S$.
# The support of $p(x)$ is a union of such sets that do not touch;
# the task is to give every point the label of the set it lies on.
# Here are two moons, coloured by the manifold each point was drawn from.

# %%
X_moons, y_moons = make_manifolds("moons", n_samples, seed=seed)
decision_figure(X_moons, y_moons, title="two moons: the true manifolds")

# %% [markdown]
# ## 2. The objective is a Jensen-Shannon divergence
#
# Let $L(x) = p(z=1|x) \in [0, 1]$ be the network's output.
# Lemma 1 turns it into two conditionals of the data,
# $q_1(x) = f_1(x)\,p(x)$ with $f_1 = L / \mathbb{E}[L]$,
# and $q_0(x) = f_0(x)\,p(x)$ with $f_0 = (1-L) / (1-\mathbb{E}[L])$.
# With $m = (q_1 + q_0)/2 = \tfrac12 (f_1 + f_0)\,p$
# and $\mathbb{E}[f_1] = \mathbb{E}[f_0] = 1$,
#
# $$\begin{aligned}
# \mathrm{JS}(q_1\|q_0)
# &= \tfrac12 \mathbb{E}\Big[f_1 \log\tfrac{2 f_1}{f_1+f_0}\Big]
#  + \tfrac12 \mathbb{E}\Big[f_0 \log\tfrac{2 f_0}{f_1+f_0}\Big] \\
# &= \log 2
#  - \tfrac12 \mathbb{E}\Big[f_1 \log\big(1+\tfrac{f_0}{f_1}\big)\Big]
#  - \tfrac12 \mathbb{E}\Big[f_0 \log\big(1+\tfrac{f_1}{f_0}\big)\Big]
#  = \log 2 - \text{DML}.
# \end{aligned}$$
#
# So minimising the DML loss (Eq. 13) maximises the divergence
# between the two conditionals (Prop. 2).
# Below, the JS divergence is computed straight from its definition on a small sample,
# where $p$ is the empirical distribution, and compared with `nbkit.losses.dml_loss`.

# %%
L = torch.rand(64, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
q1, q0 = L / L.sum(), (1 - L) / (1 - L).sum()  # conditionals on 64 points
m = (q1 + q0) / 2
JS = 0.5 * (q1 * (q1 / m).log()).sum() + 0.5 * (q0 * (q0 / m).log()).sum()
assert torch.allclose(JS, math.log(2) - dml_loss(L, eps=0.0))
float(JS), float(math.log(2) - dml_loss(L, eps=0.0))

# %% [markdown]
# For K manifolds the loss is the same two-way term for each softmax unit
# $L_k$ against all the others, averaged over $k$ (Theorem 3, Eq. 69).

# %% [markdown]
# ## 3. Why continuity makes the labels follow the manifolds
#
# Any labelling that is hard (each $L(x) \in \{0, 1\}$) makes $q_1$ and $q_0$ disjoint,
# so its JS divergence is the maximum, $\log 2$, and its DML loss is zero.
# On a finite sample a random split is therefore as good as the true one,
# as the next cell shows.

# %%
rng = np.random.default_rng(seed)
random_split = torch.tensor(rng.integers(0, 2, n_samples), dtype=torch.float64)
true_split = torch.tensor(y_moons, dtype=torch.float64)
float(dml_loss(random_split, eps=0.0)), float(dml_loss(true_split, eps=0.0))

# %% [markdown]
# Theorem 2 removes the ambiguity by asking $L$ to be continuous:
# a continuous $L$ that is 0 on part of a connected set and 1 on another part
# must take values in between somewhere on it, which lowers the divergence.
# Only a cut through the empty space between manifolds is free.
# The network is made smooth with the finite-difference Jacobian penalty (Eq. 11),
# applied to the pre-softmax output $g(x)$,
# with steps $\zeta \sim \mathcal{N}(0, 0.1^2)$
# along directions $\hat\delta_i$ in the span of the batch:
#
# $$R_c = \frac{1}{B}\sum_{i=1}^{B}
# \frac{\|g(x_i) - g(x_i + \zeta\,\hat\delta_i)\|^2}{\zeta^2},
# \qquad \text{loss} = \text{DML} + \beta\, R_c.$$
#
# With $\beta = 0$ nothing stops the network from cutting straight through a manifold;
# the circles show it.

# %%
X_circ, y_circ = make_manifolds("circles", n_samples, seed=seed)
no_smooth = nbkit.ManifoldLabeler(2, **(params | {"beta": 0.0})).fit(X_circ)
grid = decision_grid(no_smooth.predict, X_circ, resolution=resolution)
ari_beta0 = adjusted_rand(y_circ, no_smooth.labels_)
decision_figure(X_circ, no_smooth.labels_, grid, title=f"beta = 0: ARI {ari_beta0:.2f}")

# %% [markdown]
# ## 4. The four sets in 2-D
#
# Two moons and two concentric circles have two manifolds;
# three blobs and three spiral arms have three.
# Every set is standardised to zero mean and unit variance.
# `label_tasks` fits the default `ManifoldLabeler` on each set
# and computes its decision regions.
# Three manifolds use three restarts each.
# A restart has *formed* a partition when its JS divergence is above half of
# $\log 2$ and every one of the K states labels some points.
# Among the formed restarts, the one with the lowest final objective
# $\text{DML} + \beta R_c$ is kept; when none formed, more restarts are
# trained one at a time (up to three times as many).
# No true labels are used to choose.
# Why not the objective alone: a restart that merged two spirals under one
# label (a state left empty) can have a *lower* objective than a correct one,
# because a merged labelling needs fewer sharp turns, so its $R_c$ is smaller.

# %%
default_settings(2), default_settings(3)

# %%
tasks_2d = label_tasks(dims=(2,), n_samples=n_samples, seed=seed, **params)
labels_grid_figure(tasks_2d, cols=4, title="Neural Bayes-DML, 2-D inputs")

# %% [markdown]
# ## 5. The same sets lifted to 512 dimensions
#
# As in the paper, each 2-D point $x$ becomes
# $Q\,[x, 0, \dots, 0]^\top \in \mathbb{R}^{512}$
# for a random rotation $Q$ (an orthogonal matrix):
# the manifolds keep their shape and distances, but no coordinate shows them.
# $Q^\top$ followed by the first two coordinates brings the points back
# to the plane for plotting,
# and the decision regions come from lifting the 2-D grid with the same $Q$.

# %%
X_high, lifter = lift(X_moons, dim=lift_dim, seed=seed)
assert isinstance(lifter, Lift) and X_high.shape == (n_samples, lift_dim)
assert np.allclose(lifter.inverse_transform(X_high), X_moons, atol=1e-5)
X_high.shape, float(np.abs(X_high).max(axis=0).min())

# %%
tasks_hd = label_tasks(dims=(lift_dim,), n_samples=n_samples, seed=seed, **params)
labels_grid_figure(tasks_hd, cols=4, title=f"Neural Bayes-DML, {lift_dim}-D inputs")

# %% [markdown]
# ## 6. Baselines: KMeans and spectral clustering
#
# KMeans assigns each point to the nearest centroid, so its clusters are convex cells:
# it cannot follow a moon, a ring or a spiral arm.
# Spectral clustering on a 10-nearest-neighbour graph follows connectivity
# and does label these sets,
# at the price of an $N \times N$ graph and a choice of neighbourhood size.

# %%
panels = []
for method in ("kmeans", "spectral"):
    for t in tasks_2d:
        pred = baseline_labels(t["X"], int(t["y"].max()) + 1, method, seed)
        title = f"{method} {t['name']}, ARI {adjusted_rand(t['y'], pred):.2f}"
        panels.append({"X": t["X"], "labels": pred, "title": title})
labels_grid_figure(panels, cols=4, title="baselines on the 2-D sets")

# %% [markdown]
# ## 7. Fig. 4: all eight tasks
#
# The top row is 2-D, the bottom row 512-D projected back to the plane.
# The table gives the adjusted Rand index (1 = every manifold labelled distinctly),
# the wall time, and the epochs summed over restarts.

# %%
tasks = tasks_2d + tasks_hd
labels_grid_figure(tasks, cols=4, title="Neural Bayes-DML on the Fig. 4 tasks")

# %%
keys = ("name", "dim", "ari", "seconds", "n_epochs", "n_restarts")
table = [{k: t[k] for k in keys} for t in tasks]
[
    f"{r['name']:8s} {r['dim']:4d}-D  ARI {r['ari']:.3f}  {r['seconds']:5.1f} s  "
    f"{r['n_epochs']:4d} epochs / {r['n_restarts']} restart(s)"
    for r in table
]

# %% [markdown]
# The checks the reader should see pass: every task labelled (almost) perfectly,
# the smoothness-free run visibly worse, and the whole notebook within its time budget.

# %%
assert all(t["ari"] >= 0.95 for t in tasks), [(t["title"]) for t in tasks]
assert ari_beta0 < 0.9, ari_beta0
elapsed = time.perf_counter() - start_time
min(t["ari"] for t in tasks), round(ari_beta0, 3), round(elapsed, 1)

# %% [markdown]
# ## Caveats
#
# - On a finite sample every hard labelling has DML loss zero,
#   so the result rests on the smoothness term and on optimisation,
#   not on the loss alone.
# - Three manifolds often end with two merged under one label
#   (one state left empty);
#   keeping only restarts that use every state fixes this on these sets
#   (all eight tasks at ARI 1.00 for seeds 0, 1 and 2), but a restart that
#   uses every state and still cuts through an arm would be kept.
# - beta matters: too small and cuts run through manifolds,
#   too large and the network stays constant (JS near 0).
#   The paper tuned it per set in [0.5, 6];
#   the defaults here are one value per number of manifolds.
# - Narrow networks (4 x 128) tend to stay constant on the circles at beta = 1;
#   the default is 4 x 256, the paper's 4 x 400 also works and is slower.
# - The spirals here make half a turn per arm;
#   with a full turn the default settings often fail.
# - Timings depend on the machine; the eight fits take minutes on two CPU cores.

# %% [markdown]
# ## Conclusion
#
# Neural Bayes turns a network's softmax into the conditionals of the data,
# so the DML loss is exactly $\log 2$ minus a Jensen-Shannon divergence between them.
# The divergence alone cannot tell a good partition from a bad one on samples;
# the smoothness penalty is what makes the labels follow the manifolds,
# in 2-D and after a random rotation into 512 dimensions.
# Centroid methods such as KMeans fail on the same curved sets.
