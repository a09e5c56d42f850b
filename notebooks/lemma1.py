# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lemma 1: the Neural Bayes parameterization
#
# Neural Bayes turns any network with a softmax output $L(x)$ into a latent
# variable model.
# Lemma 1 of the paper says that for any such $L$ with rows on the simplex,
#
# $$p(z=k \mid x) = L_k(x), \qquad p(z=k) = \mathbb{E}_x[L_k(x)], \qquad
# p(x \mid z=k) = \frac{L_k(x)\, p(x)}{\mathbb{E}_x[L_k(x)]}$$
#
# is a valid factorisation of $p(x)$.
# We check this on a distribution whose answer we know exactly:
# a 1-D mixture of two Gaussians restricted to a fine grid.
# On a grid, $p(x)$ is a probability vector and every expectation is a
# weighted sum, so all identities hold to machine precision.

# %%
import math

import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from nbkit import bayes
from nbkit.diagnostics import entropy, mixture_on_grid, smooth_states
from nbkit.viz import mixture_figure
from nbkit.widgets import live_panel

torch.manual_seed(0)
device = torch.device("cpu")  # everything here is tiny; float64 on the CPU
torch.set_default_dtype(torch.float64)

# %% tags=["parameters"]
weights = (0.3, 0.7)  # mixing weights p(z=k) of the true mixture, sum to 1
separation = 3.0  # distance between the two component means, in stds
std = 1.0  # standard deviation of each component
n_points = 801  # grid points of the discrete support, >= 2
x_lim = 8.0  # the grid covers [-x_lim, x_lim]
n_states = 3  # K of the arbitrary softmax L, >= 2
temperature = 1.0  # softness of the arbitrary L, > 0 (small = hard partition)
seed = 0  # seed of the arbitrary L's random logits
tolerance = 1e-12  # largest allowed float64 error in the checks
live = True  # True: sliders drive live figures; False: static figures

# %% [markdown]
# ## The known answer
#
# The true model has $z \in \{0, 1\}$ with $p(z=k) = \pi_k$ and
# $p(x \mid z=k) = \mathcal{N}(\mu_k, \sigma^2)$, normalised on the grid.
# Bayes' rule gives the true posterior
# $p(z=k \mid x) = \pi_k\, p(x \mid z=k) / p(x)$.

# %%
means = (-separation / 2, separation / 2)
mix = mixture_on_grid(weights, means, std, n_points=n_points, x_lim=x_lim)
x, p_x = mix.x, mix.p_x  # grid (N,) and probabilities (N,)
print(f"grid of {len(x)} points, sum p(x) = {float(p_x.sum()):.15f}")
mixture_figure(x, p_x, mix.p_x_given_z * mix.p_z, title="The true mixture")

# %% [markdown]
# ## Plugging in the true posterior
#
# Take $L = p(z \mid x)$, the true posterior.
# Lemma 1 says the prior is its expectation,
#
# $$E_L := \mathbb{E}_x[L(x)] = \sum_i p(x_i)\, L(x_i),$$
#
# which we compute by hand and compare with `nbkit.bayes.prior` and with the
# mixing weights we started from.

# %%
L = mix.posterior  # (N, K)
E_L = (p_x[:, None] * L).sum(dim=0)  # (K,)
assert torch.allclose(E_L, bayes.prior(L, weights=p_x), atol=tolerance)
assert torch.allclose(E_L, mix.p_z, atol=tolerance)
E_L

# %% [markdown]
# The conditionals follow from the same $L$:
#
# $$p(x_i \mid z=k) = \frac{L_k(x_i)\, p(x_i)}{E_{L,k}}.$$
#
# They must equal the true component densities on the grid.

# %%
p_x_given_z = L * p_x[:, None] / E_L  # (N, K)
assert torch.allclose(p_x_given_z, bayes.conditionals(L, p_x), atol=tolerance)
error = (p_x_given_z - mix.p_x_given_z).abs().max().item()
print(f"largest error against the true components: {error:.2e}")
assert error < tolerance
mixture_figure(
    x, p_x, p_x_given_z * E_L, reference=mix.p_x_given_z * mix.p_z,
    title="Recovered p(x|z) p(z) (solid) against the truth (dotted)",
)

# %% [markdown]
# ## Any softmax gives a factorisation
#
# Now take an arbitrary smooth $L$ with $K$ states: a softmax of random
# low-frequency waves divided by a temperature.
# It knows nothing about the mixture, yet Lemma 1 still yields a valid model:
# every $p(x \mid z=k)$ sums to one, and
# $\sum_k p(x \mid z=k)\, p(z=k) = p(x)$.

# %%
L_arb = smooth_states(x, n_states, temperature, seed=seed)  # (N, K)
E_L_arb = bayes.prior(L_arb, weights=p_x)
cond_arb = bayes.conditionals(L_arb, p_x)  # (N, K)
print("column sums:", cond_arb.sum(dim=0).tolist())
assert torch.allclose(cond_arb.sum(dim=0), torch.ones(n_states), atol=tolerance)
assert torch.allclose(cond_arb @ E_L_arb, p_x, atol=tolerance)
mixture_figure(x, p_x, cond_arb * E_L_arb, title="A different factorisation")

# %% [markdown]
# The components are not Gaussians, and there are three of them, but they add
# up to the same $p(x)$.
# Lemma 1 alone does not choose the factorisation: **the objective does**.
# Mutual information maximisation (MIM) and manifold labelling (DML) are two
# such choices.
#
# Move the sliders: the mixture weight, the separation of the true
# components and the temperature of the arbitrary $L$.
# Whatever you pick, the coloured components add back to the black $p(x)$.

# %%
def redraw(fig, w0, sep, temp):
    m = mixture_on_grid((w0, 1 - w0), (-sep / 2, sep / 2), std, n_points, x_lim)
    L_new = smooth_states(m.x, n_states, temp, seed=seed)
    parts = bayes.conditionals(L_new, m.p_x) * bayes.prior(L_new, weights=m.p_x)
    fig.data[0].y = m.p_x.numpy()
    for k in range(n_states):
        fig.data[1 + k].y = parts[:, k].numpy()


controls = {
    "w0": widgets.FloatSlider(value=weights[0], min=0.05, max=0.95, step=0.05),
    "sep": widgets.FloatSlider(value=separation, min=0.0, max=8.0, step=0.5),
    "temp": widgets.FloatLogSlider(value=temperature, base=10, min=-2, max=2),
}
live_panel(mixture_figure(x, p_x, cond_arb * E_L_arb), controls, redraw, live)

# %% [markdown]
# ## Mutual information in closed form (Prop. 1)
#
# With the Neural Bayes parameterization the mutual information between $x$
# and $z$ needs no density estimate:
#
# $$\mathrm{MI}(x, z) = \mathbb{E}_x\Big[\sum_k L_k(x)
# \log \frac{L_k(x)}{E_{L,k}}\Big].$$
#
# We write the sum by hand and check it against
# `nbkit.bayes.mutual_information`.
# For the true posterior it must also equal the textbook
# $H(z) - \mathbb{E}_x[H(z \mid x)]$ of the mixture.

# %%
def mi_by_hand(L, p_x):
    E_L = (p_x[:, None] * L).sum(dim=0)
    return (p_x[:, None] * torch.xlogy(L, L / E_L)).sum()


MI_true = mi_by_hand(L, p_x)
assert torch.isclose(MI_true, bayes.mutual_information(L, p_x), atol=tolerance)
textbook = entropy(mix.p_z) - (p_x * entropy(L)).sum()
assert torch.isclose(MI_true, textbook, atol=tolerance)
print(f"MI of the true mixture: {MI_true:.4f} nats (H(z) = {entropy(E_L):.4f})")

# %% [markdown]
# ## How MI grows as L sharpens
#
# $\mathrm{MI} = H(z) - \mathbb{E}_x[H(z \mid x)]$, so it can never exceed
# $H(z)$, which itself can never exceed $\log K$.
# As the temperature of the arbitrary $L$ falls, $L$ approaches a hard
# partition, $H(z \mid x) \to 0$ and MI climbs to $H(z)$.
# MIM adds the uniform prior to push $H(z)$ itself up to $\log K$.

# %%
temps = torch.logspace(-2, 2, 41)
curve = {"MI": [], "H(z)": []}
for t in temps:
    L_t = smooth_states(x, n_states, float(t), seed=seed)
    curve["MI"].append(float(bayes.mutual_information(L_t, p_x)))
    curve["H(z)"].append(float(entropy(bayes.prior(L_t, weights=p_x))))
MI, H_z = torch.tensor(curve["MI"]), torch.tensor(curve["H(z)"])
assert float((MI - H_z).max()) <= tolerance
assert float(H_z.max()) <= math.log(n_states) + tolerance
print(f"T = {temps[0]:.2f}: MI = {MI[0]:.4f}, H(z) = {H_z[0]:.4f} nats")

# %% [markdown]
# The curve: MI (blue) rises towards $H(z)$ (red) as $L$ hardens, and both
# stay under the dashed $\log K$.

# %%
fig = go.Figure()
for name, y in curve.items():
    fig.add_scatter(x=temps.numpy(), y=y, name=name, mode="lines")
fig.add_hline(y=math.log(n_states), line_dash="dash", annotation_text="log K")
fig.update_xaxes(type="log", title="temperature of L")
fig.update_layout(yaxis_title="nats", title="MI is bounded by H(z) <= log K")

# %% [markdown]
# ## Caveats
#
# - The support here is a grid, so expectations are exact weighted sums.
#   A network sees samples instead, and $E_L$ becomes a batch mean: an
#   estimate, whose consequences the Theorem 1 notebook measures.
# - Lemma 1 needs $0 < E_{L,k} < 1$; a state that is never used makes
#   $p(x \mid z=k)$ undefined (a division by zero).
# - The arbitrary $L$ is a fixed random function, not a trained network; it
#   stands in for "whatever the network computes before training".
#
# ## Conclusion
#
# Any softmax output defines a consistent latent variable model: its mean is
# the prior, its rows are the posterior and their ratio gives the
# conditionals.
# With the true posterior we recovered the true mixture exactly; with an
# arbitrary $L$ we got a different but equally valid factorisation.
# The mutual information of that factorisation has a closed form, bounded by
# $H(z) \le \log K$, and an objective such as MIM decides which factorisation
# the network learns.
