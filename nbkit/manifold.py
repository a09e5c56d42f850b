"""Neural Bayes-DML as a scikit-learn clusterer: label disjoint manifolds.

``ManifoldLabeler`` trains an MLP with a softmax over ``n_manifolds``
states on ``dml_loss + beta * smoothness`` (paper section 4, Appendix G)
and labels each sample by its most likely state. ``baseline_labels`` gives
KMeans and spectral clustering on the same data for comparison.

Robustness without labels: the K-way objective has many poor local optima
(two manifolds merged under one state, or a straight cut through a curved
manifold). Every partition that is hard on the samples reaches a DML loss
near zero, so the loss alone cannot tell them apart; the smoothness term
makes cuts through a manifold cost more than cuts through empty space.
The estimator therefore (1) trains ``n_restarts`` independently seeded
networks and keeps the one with the lowest final objective
``dml_loss + beta * Rc`` measured on the whole data set, and (2) stops a
restart early once its labels have settled (a plateau), which pays for
the extra restarts.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans, SpectralClustering
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ._checks import check_choice, check_int, check_number
from .losses import dml_loss, js_divergence
from .models import MLP
from .regularizers import smoothness

__all__ = [
    "ManifoldLabeler",
    "baseline_labels",
    "BASELINES",
    "default_settings",
    "label_tasks",
]

log = logging.getLogger(__name__)

BASELINES = ("kmeans", "spectral")

# defaults chosen on the eight Fig.-4 tasks (2-D and 512-D, 1,000 points);
# three manifolds need a gentler smoothness and more restarts than two
_DEFAULTS = {
    2: {"beta": 1.0, "max_epochs": 400, "n_restarts": 1},
    3: {"beta": 0.5, "max_epochs": 400, "n_restarts": 3},
}


def default_settings(n_manifolds):
    """Per-K defaults of beta, max_epochs and n_restarts: a dict."""
    return dict(_DEFAULTS[min(int(n_manifolds), 3)])


def _as_array(X, name="X"):
    """Numpy float32 copy of an array-like or tensor: (N, D) -> (N, D)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        X64 = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a numeric array (N, D): {err}") from None
    big = np.isfinite(X64) & (np.abs(X64) > np.finfo(np.float32).max)
    if big.any():
        raise ValueError(
            f"{name} holds finite values beyond float32's range (largest "
            f"|value| {np.abs(X64[big]).max():.3g}); the network computes in "
            "float32: rescale X (e.g. standardise it) before fitting"
        )
    X = X64.astype(np.float32)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got shape "
            f"{X.shape}; reshape a single feature with X.reshape(-1, 1)"
        )
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains NaN or inf in {len(rows)} row(s) (first: row "
            f"{rows[0]}); remove or impute them before fitting"
        )
    return X


def _resolve_device(device):
    """None -> cuda when available else cpu; a string or torch.device."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"device={device!r} is not a torch device: {err}") from None


def _n_used(labels):
    """How many distinct labels (states) a labelling uses: an int."""
    return int(len(np.unique(labels)))


class ManifoldLabeler(ClusterMixin, BaseEstimator):
    """Label disjoint manifolds with Neural Bayes-DML: X (N, D) -> labels (N,).

    Parameters
    ----------
    n_manifolds : int >= 2, the number of states K of the softmax output.
    beta : float >= 0 or None, weight of the smoothness term Rc on the
        pre-softmax output; None takes 1.0 for K = 2 and 0.5 for K >= 3.
    max_epochs : int or None, epoch budget per restart (None: 400); a
        restart may stop earlier on a plateau.
    batch_size : int or None, samples per step; None trains full batch,
        which DML prefers (its gradient runs through the batch mean E[L]).
    hidden : widths of the hidden layers (Linear, BatchNorm, ReLU each).
        The paper uses four layers of 400; four of 256 label these sets as
        well and train about twice as fast on a CPU. Much narrower nets
        (128) tend to stay constant on the circles at beta = 1.
    lr : Adam learning rate.
    n_restarts : int or None, independently seeded networks trained in
        any case (None: 1 for K = 2, 3 for K >= 3).
    max_restarts : int or None, the most restarts in all (None: 3 x
        n_restarts). When none of the first ``n_restarts`` *formed* a
        partition (JS divergence above half of log 2, with every one of
        the K states labelling some points), more are trained, one at a
        time, until one does or ``max_restarts`` is reached.
        The kept restart is the formed one with the lowest final objective
        dml_loss + beta * Rc; if none formed, the one using the most states
        (then the lowest objective), with a RuntimeWarning.
        No true labels are used to choose. Why "formed" comes first: a
        restart that left a state empty has merged two manifolds, and with
        beta > 0 a merged restart can reach a lower objective (lower Rc)
        than a correct one; on the eight tasks every wrong restart we saw
        used fewer than K states, or never formed a partition.
    patience, tol : stop a restart once at most a fraction ``tol`` of the
        labels changed per epoch for ``patience`` epochs in a row, after the
        partition formed (JS divergence above half of log 2).
    random_state : int, seeds initialisation, noise and restarts.
    device : None (cuda when available, else cpu), "cpu", "cuda", ...
    progress : bool, show a tqdm.auto bar over all epochs of all restarts.
    callback : None or callable(restart, epoch, info dict), called after
        every epoch with the loss, JS divergence, Rc and beta.

    Attributes after ``fit``: ``labels_`` (N,), ``history_`` (dict of
    per-epoch lists for the kept restart: loss, js, rc, objective and
    changed, the number of labels that changed),
    ``model_`` (the trained MLP, eval mode), ``n_epochs_``, ``loss_`` and
    ``js_`` (final DML loss and JS divergence of the kept restart),
    ``objective_``, ``restart_`` (its index), ``restarts_`` (per restart a
    dict: loss, js, rc, objective, seed, n_epochs, labels, n_used, formed),
    ``n_features_in_``.
    """

    def __init__(
        self,
        n_manifolds=2,
        beta=None,
        max_epochs=None,
        batch_size=None,
        hidden=(256, 256, 256, 256),
        lr=1e-3,
        n_restarts=None,
        max_restarts=None,
        patience=30,
        tol=1e-3,
        random_state=0,
        device=None,
        progress=True,
        callback=None,
    ):
        self.n_manifolds = n_manifolds
        self.beta = beta
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.hidden = hidden
        self.lr = lr
        self.n_restarts = n_restarts
        self.max_restarts = max_restarts
        self.patience = patience
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.progress = progress
        self.callback = callback

    # ---- checks -------------------------------------------------------
    def _settings(self):
        """Validate the parameters and fill the per-K defaults: a dict."""
        K = check_int("n_manifolds", self.n_manifolds, low=2)
        s = default_settings(K)
        if self.beta is not None:
            s["beta"] = check_number("beta", self.beta, low=0)
        if self.max_epochs is not None:
            s["max_epochs"] = check_int("max_epochs", self.max_epochs, low=1)
        if self.n_restarts is not None:
            s["n_restarts"] = check_int("n_restarts", self.n_restarts, low=1)
        s["max_restarts"] = 3 * s["n_restarts"]
        if self.max_restarts is not None:
            check_int("max_restarts", self.max_restarts)
            if self.max_restarts < s["n_restarts"]:
                default = "" if self.n_restarts is not None else f" by default, K={K}"
                raise ValueError(
                    f"max_restarts must be >= n_restarts ({s['n_restarts']}"
                    f"{default}), got {self.max_restarts}"
                )
            s["max_restarts"] = int(self.max_restarts)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, low=2)
        if not isinstance(self.hidden, Sequence) or len(self.hidden) == 0:
            raise TypeError(
                f"hidden must be a non-empty sequence of widths, got {self.hidden!r}"
            )
        for i, w in enumerate(self.hidden):
            check_int(f"hidden[{i}]", w, low=1)
        check_number("lr", self.lr, low=0, low_open=True)
        check_int("patience", self.patience, low=1)
        check_number("tol", self.tol, low=0)
        check_int("random_state", self.random_state, low=0)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, got {self.progress!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable or None, got {self.callback!r}")
        s["device"] = _resolve_device(self.device)
        return s

    # ---- training -----------------------------------------------------
    def _objective(self, model, x, beta, gen):
        """(dml, rc, logits) on a batch x (B, D): scalars and (B, K)."""
        logits = model(x)  # (B, K), pre-softmax
        L = torch.softmax(logits, dim=1)
        dml = dml_loss(L, validate=False)
        if beta > 0:
            rc = smoothness(model, x, generator=gen, fx=logits)
        else:
            rc = torch.zeros((), device=x.device)
        return dml, rc, logits

    def _train_one(self, x, s, seed, restart, bar):
        """Train one seeded network on x (N, D): (model, history, summary)."""
        device, beta = s["device"], s["beta"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MLP(x.shape[1], tuple(self.hidden), self.n_manifolds)
        model = model.to(device)
        gen = torch.Generator(device=device).manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=self.lr)
        N = x.shape[0]
        B = N if self.batch_size is None else min(self.batch_size, N)
        hist = {"loss": [], "js": [], "rc": [], "objective": [], "changed": []}
        labels = torch.full((N,), -1, dtype=torch.long, device=device)
        stable = 0  # epochs in a row with (almost) no label changing
        for epoch in range(s["max_epochs"]):
            model.train()
            order = torch.randperm(N, generator=gen, device=device)
            new_labels = labels.clone()
            tot = [0.0, 0.0]  # sums of dml and rc over steps (tensors)
            n_steps = 0
            for i in range(0, N, B):
                idx = order[i : i + B]
                if len(idx) < 2:  # E[L] needs two samples; skip a last single
                    continue
                dml, rc, logits = self._objective(model, x[idx], beta, gen)
                loss = dml + beta * rc
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                new_labels[idx] = logits.detach().argmax(dim=1)
                tot[0] = tot[0] + dml.detach()
                tot[1] = tot[1] + rc.detach()
                n_steps += 1
            changed = int((new_labels != labels).sum())
            labels = new_labels
            dml_e = float(tot[0]) / n_steps
            rc_e = float(tot[1]) / n_steps
            obj = dml_e + beta * rc_e
            js = math.log(2) - dml_e
            for key, v in zip(hist, (dml_e, js, rc_e, obj, changed), strict=True):
                hist[key].append(v)
            if self.callback is not None:
                info = {"loss": dml_e, "js": js, "rc": rc_e, "beta": beta}
                self.callback(restart, epoch, info)
            bar.update(1)
            bar.set_postfix(restart=restart, loss=f"{dml_e:.4f}", js=f"{js:.3f}")
            if not math.isfinite(obj):  # diverged: fit drops this restart
                log.warning("restart %d: objective %s at epoch %d", restart, obj, epoch)
                bar.update(s["max_epochs"] - epoch - 1)
                break
            # plateau: labels settled once the partition has formed
            stable = stable + 1 if changed <= self.tol * N else 0
            if stable >= self.patience and js > 0.5 * math.log(2):
                bar.update(s["max_epochs"] - epoch - 1)
                break
        model.eval()
        summary = self._evaluate(model, x, beta, gen)
        summary.update(seed=seed, n_epochs=len(hist["loss"]))
        summary["labels"] = model(x).argmax(dim=1).cpu().numpy()
        summary["n_used"] = _n_used(summary["labels"])
        summary["formed"] = bool(
            summary["js"] > 0.5 * math.log(2)
            and summary["n_used"] == self.n_manifolds
            and math.isfinite(summary["objective"])
        )
        return model, hist, summary

    @torch.no_grad()
    def _evaluate(self, model, x, beta, gen):
        """Final loss, JS and objective of an eval-mode model on x: a dict."""
        logits = model(x)
        L = torch.softmax(logits, dim=1)
        loss = float(dml_loss(L, validate=False))
        rc = float(smoothness(model, x, zeta=0.1, generator=gen, fx=logits))
        return {
            "loss": loss,
            "js": float(js_divergence(L, validate=False)),
            "rc": rc,
            "objective": loss + beta * rc,
        }

    def fit(self, X, y=None):
        """Train on X (N, D) (numpy or torch); y is ignored. Returns self."""
        s = self._settings()
        X = _as_array(X)
        K = self.n_manifolds
        if X.shape[0] < max(K, 2):
            raise ValueError(
                f"X has {X.shape[0]} row(s) but n_manifolds={K}; DML needs at "
                f"least as many samples as manifolds (and at least 2)"
            )
        x = torch.as_tensor(X, device=s["device"])
        seeds = np.random.SeedSequence(self.random_state).generate_state(
            s["max_restarts"]
        )
        total = s["n_restarts"] * s["max_epochs"]
        runs = []
        with tqdm(total=total, disable=not self.progress, desc="DML") as bar:
            for r, seed in enumerate(seeds):
                if r >= s["n_restarts"]:
                    if any(run[2]["formed"] for run in runs):
                        break
                    bar.total += s["max_epochs"]  # one more restart
                    bar.refresh()
                runs.append(self._train_one(x, s, int(seed), r, bar))
                log.info("restart %d: %s", r, runs[-1][2])
        finite = [r for r in range(len(runs)) if math.isfinite(runs[r][2]["objective"])]
        if not finite:
            raise FloatingPointError(
                f"training diverged in all {len(runs)} restart(s): the DML "
                f"objective became NaN or inf (restart 0 after "
                f"{runs[0][2]['n_epochs']} epoch(s)); lower lr (now {self.lr!r}) "
                "or beta, or check the scale of X"
            )
        # formed restarts first (see max_restarts), then the most states in
        # use, then the lowest objective
        best = min(
            finite,
            key=lambda r: (
                not runs[r][2]["formed"],
                -runs[r][2]["n_used"],
                runs[r][2]["objective"],
            ),
        )
        if not runs[best][2]["formed"]:
            warnings.warn(
                f"no restart formed a partition of {K} manifolds in "
                f"{len(runs)} restart(s) (the kept one labels with "
                f"{runs[best][2]['n_used']} of {K} states, JS divergence "
                f"{runs[best][2]['js']:.3f}, half of log 2 needed); try more "
                f"max_epochs (now {s['max_epochs']}), another beta (now "
                f"{s['beta']}) or fewer n_manifolds",
                RuntimeWarning,
                stacklevel=2,
            )
        self.model_, self.history_, summary = runs[best]
        self.restart_ = best
        self.restarts_ = [run[2] for run in runs]
        self.loss_ = summary["loss"]
        self.js_ = summary["js"]
        self.objective_ = summary["objective"]
        self.n_epochs_ = summary["n_epochs"]
        self.beta_ = s["beta"]
        self.device_ = s["device"]
        self.n_features_in_ = X.shape[1]
        self.labels_ = self.predict(X)
        return self

    # ---- inference ----------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, X):
        """p(z=k|x) = L_k(x) for X (N, D): numpy float32 (N, n_manifolds)."""
        check_is_fitted(self, "model_")
        X = _as_array(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but the model was fitted on "
                f"{self.n_features_in_}"
            )
        self.model_.eval()
        out = []
        for i in range(0, X.shape[0], 65536):  # bounded memory for big grids
            xb = torch.as_tensor(X[i : i + 65536], device=self.device_)
            out.append(torch.softmax(self.model_(xb), dim=1).cpu().numpy())
        return np.concatenate(out, axis=0)

    def predict(self, X):
        """Most likely manifold of each row of X (N, D): int64 (N,)."""
        return self.predict_proba(X).argmax(axis=1).astype(np.int64)

    def fit_predict(self, X, y=None):
        """Fit on X (N, D) and return labels_ (N,)."""
        return self.fit(X).labels_


def baseline_labels(
    X, n_clusters, method="kmeans", random_state=0, n_neighbors=10
) -> np.ndarray:
    """KMeans or spectral clustering (k-NN graph) of X (N, D): labels (N,)."""
    check_choice("method", method, BASELINES)
    check_int("n_clusters", n_clusters, low=2)
    X = _as_array(X)
    if method == "kmeans":
        est = KMeans(n_clusters, n_init=10, random_state=random_state)
    else:
        est = SpectralClustering(
            n_clusters,
            affinity="nearest_neighbors",
            n_neighbors=n_neighbors,
            assign_labels="cluster_qr",
            random_state=random_state,
        )
    return est.fit_predict(X).astype(np.int64)


def label_tasks(
    names=None,
    dims=(2, 512),
    n_samples=1000,
    seed=0,
    resolution=100,
    **params,
):
    """Fit a ``ManifoldLabeler`` on every (set, dim) task: a list of dicts.

    Each dict holds name, dim, title, X (N, 2) in the plane, y, labels,
    grid (``nbkit.viz.decision_grid`` over the plane, lifted for dim > 2),
    ari, seconds, n_epochs (summed over restarts), n_restarts, js and the
    fitted estimator; ``params`` go to ``ManifoldLabeler``.
    """
    import time

    from .data.synthetic import MANIFOLDS, N_MANIFOLDS, Lift, make_manifolds
    from .metrics import adjusted_rand
    from .viz import decision_grid

    names = MANIFOLDS if names is None else tuple(names)
    results = []
    for name in names:
        X2, y = make_manifolds(name, n_samples, seed=seed)
        for dim in dims:
            lifter = Lift(dim, seed) if dim > 2 else None
            X = X2 if lifter is None else lifter.transform(X2)
            start = time.perf_counter()
            est = ManifoldLabeler(N_MANIFOLDS[name], random_state=seed, **params)
            est.fit(X)
            secs = time.perf_counter() - start
            ari = adjusted_rand(y, est.labels_)
            log.info("%s %d-D: ARI %.3f in %.1f s", name, dim, ari, secs)
            results.append(
                {
                    "name": name,
                    "dim": dim,
                    "title": f"{name} {dim}-D, ARI {ari:.2f}",
                    "X": X2,
                    "y": y,
                    "labels": est.labels_,
                    "grid": decision_grid(est.predict, X2, lifter, resolution),
                    "ari": ari,
                    "seconds": secs,
                    "n_epochs": sum(r["n_epochs"] for r in est.restarts_),
                    "n_restarts": len(est.restarts_),
                    "js": est.js_,
                    "estimator": est,
                }
            )
    return results
