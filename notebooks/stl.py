# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # STL-10 at 32 x 32: Neural Bayes-MIM features (Table 2)
#
# The paper's CNN encoder is trained without labels by maximising the
# mutual information between images and the softmax states of its hidden
# maps (Neural Bayes-MIM, section 5.1).
# It is then frozen, and an MLP with 200 hidden units trained on its
# features measures what it learned, against the same encoder left at its
# random initialisation.
#
# | | STL-10 |
# | --- | --- |
# | Neural Bayes-MIM | 64.84 |
# | Neural Bayes-MIM (2nd layer) | 67.19 |
# | random encoder | 53.91 |
#
# As in the paper, the 96 x 96 images are shrunk to 32 x 32 (a 3 x 3 block
# mean), and the encoder trains on the 100,000 unlabeled images plus the
# 5,000 labelled training images; the probe trains on the labelled ones.
#
# Defaults are the paper's settings (a GPU job: 100 epochs at full width);
# `profile="cpu"` is a few minutes on a laptop, `profile="smoke"` seconds.

# %%
import torch

from nbkit import experiment as ex

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"

# %% tags=["parameters"]
dataset = "stl10"  # only "stl10" in this notebook
data_dir = "data"  # folder with stl10_binary (torchvision's layout)
download = None  # fetch with torchvision when missing; None: profile default
profile = "paper"  # "paper", "cpu" (minutes on a CPU) or "smoke" (seconds)
epochs = None  # encoder epochs (paper 100); None: profile default
mbs = None  # mini-batch size (paper 500); None: profile default
bs = None  # batch that gradients accumulate to, a multiple of mbs (paper 4000)
alpha = None  # prior weight beyond 1, not negative (paper 2; authors README 4)
beta = None  # smoothness weight, not negative (paper 4; authors README 2)
prior = None  # uniform prior "v1" or "v2" (paper v2)
smooth_on = None  # Rc on "pooled" (global mean of the last map: authors' code),
# "pool2x2" (the paper's literal P(h3)), "last" or "output"; None: "pooled"
sampling = None  # "epoch" (a permutation per epoch) or "fresh" (a new shuffle
# every step, as the authors' loader); None: "epoch"
noisy_bn = None  # batch norm in the perturbed pass: "train" (authors) or
# "no_update" (running statistics see clean batches only); None: "train"
pool = None  # also use 2x2-pooled states: 8 states, else 4 (paper True)
width = None  # encoder channel multiplier (paper 1.0)
n_train = None  # images used per split, or "all"; None: profile default
second_layer = None  # also probe the 2nd hidden map (paper True)
selection = "validation"  # probe epoch chosen on "validation" or "test" (paper)
seed = 0  # seeds the encoder, the split and the batches
resume = False  # continue the run in output_dir from its checkpoints
overwrite = False  # replace an earlier run in output_dir
output_dir = None  # None: a new folder runs/stl-stl10-<date>-<time>
progress = True  # tqdm progress bars

# %% [markdown]
# ## Settings
#
# A parameter left at `None` takes the profile's value; a value given
# here (or with papermill's `-p`) wins.
# Everything is checked before any data is loaded, and the run writes to
# its own folder (an earlier run is never overwritten unless
# `overwrite=True`).
# The authors' README swaps the paper's weights (alpha=4, beta=2);
# pass them to compare.
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
    "stl", profile=profile, dataset=dataset, data_dir=data_dir,
    download=download, epochs=epochs, mbs=mbs, bs=bs, alpha=alpha, beta=beta,
    prior=prior, smooth_on=smooth_on, sampling=sampling,
    noisy_bn=noisy_bn, pool=pool, width=width, n_train=n_train,
    second_layer=second_layer, selection=selection, seed=seed, resume=resume,
    overwrite=overwrite, output_dir=output_dir, device=device,
)  # fmt: skip
run = ex.start_run(config)
{k: getattr(config, k) for k in ("dataset", "epochs", "mbs", "bs", "alpha", "beta")}

# %% [markdown]
# ## Data
#
# Every pixel of every channel is standardized to zero mean and unit
# variance over the encoder's images, unlabeled + train (the paper's
# normalisation).
# `n_train` caps the labelled and the encoder's images alike.
# A stratified tenth of the training images is held out to choose the
# probe's epoch; the whole test set is scored.

# %%
data = ex.load_experiment_data(config, progress=progress)
data.summary()

# %% [markdown]
# ## Training the encoder
#
# Each hidden map $h_i$ (and with `pool`, its 2x2 average-pooled copy) is a
# softmax state $L$ over channels at every location, trained with Eq. 7:
# $-E[\sum_k L_k \log \mathrm{sg}(L_k)] + (1 + \alpha) R_p + \beta R_c$.
# $R_p$ pulls $E[L_k]$ to $1/K$; $R_c$ keeps the pooled last map smooth
# along directions in the span of the data.
# Gradients of `mbs` images accumulate until `bs` images are seen.

# %%
encoder = ex.make_encoder(config, data)
random_encoder = ex.make_encoder(config, data)  # same seed: same initial weights
history = ex.fit_mim(config, encoder, data, run, progress=progress)
ex.plot_history(history, ["loss", "entropy", "prior", "smoothness"], "MIM terms")

# %% [markdown]
# ## Probing the frozen features
#
# An MLP (200 hidden units) is trained on the spatially averaged last
# hidden map (and the 2nd one with `second_layer`), for the trained and the
# random encoder alike.

# %%
rows = ex.probe_encoder(config, data, run, encoder, random_encoder)
results = ex.write_results(run, config, rows, device=device)
ex.comparison_table(rows)

# %% [markdown]
# *Whole test* accuracies use the probe epoch chosen on the validation
# split; *paper protocol* is the best epoch on the first 128 test images,
# with its 95 % binomial interval: how the paper's numbers were scored.
# Below, probe accuracy per epoch for learned (solid) and random (dotted)
# features, the paper's Fig. 3 for this run.

# %%
fig = ex.plot_probe_curves(ex.read_metrics(run.dir))
ex.save_figure(fig, run, "probe_curves")
fig

# %%
for row in rows:
    print(f"{row['features']}: learned {row['accuracy']:.2%}", end="  ")
    print(f"random {row['random_accuracy']:.2%}")
print(f"wall time {results['wall_seconds']:.0f} s on {device}; outputs in {run.dir}")

# %% [markdown]
# ## Caveats
#
# - The paper's table reports the best of several runs (learning rates and
#   weight decays) scored on 128 test images with the epoch chosen on them;
#   a 95 % interval there is about +-6.5 points, so compare with the
#   *paper protocol* column and its interval, not only the whole-test one.
# - The paper grid-searches 16 probe settings for the random baseline; here
#   both encoders get one probe setting.
# - Which end the paper's "2nd layer" counts from is not stated; here it is
#   the second conv from the input (500 channels at full width).
# - 32 x 32 STL-10 loses most of the detail of the 96 x 96 images; the
#   paper chose it for memory, and Deep InfoMax's 64 x 64 numbers are not
#   comparable.
# - The cpu and smoke profiles use narrow encoders, few epochs and a subset
#   of the images: their numbers show the method working, not the paper's.

# %% [markdown]
# ## Conclusion
#
# The MIM objective needs no labels, yet its features carry more class
# information than the random encoder's under the same probe.
# `notebooks/results.ipynb` gathers this run with the CIFAR runs into the
# paper's Table 2.
