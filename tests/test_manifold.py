"""ManifoldLabeler: the eight Fig.-4 tasks, determinism, beta = 0, bad input."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from nbkit import ManifoldLabeler
from nbkit.data import MANIFOLDS, N_MANIFOLDS, Lift, make_manifolds
from nbkit.manifold import baseline_labels, label_tasks
from nbkit.metrics import adjusted_rand
from nbkit.viz import decision_grid, labels_grid_figure

N = 1000  # points per task, as in the notebook's default
SEED = 0


@pytest.fixture(scope="module")
def tasks():
    """All eight tasks fitted once with the default estimator: {(name, dim)}."""
    results = label_tasks(dims=(2, 512), n_samples=N, seed=SEED, progress=False)
    return {(t["name"], t["dim"]): t for t in results}


@pytest.mark.slow
@pytest.mark.parametrize("dim", [2, 512])
@pytest.mark.parametrize("name", MANIFOLDS)
def test_default_labels_every_manifold(tasks, name, dim):
    t = tasks[(name, dim)]
    assert t["ari"] >= 0.99, t["title"]
    assert len(np.unique(t["labels"])) == N_MANIFOLDS[name]
    # the kept restart formed a partition: JS above half its maximum log 2,
    # every state in use
    kept = t["estimator"].restarts_[t["estimator"].restart_]
    assert kept["formed"] and kept["n_used"] == N_MANIFOLDS[name]
    assert t["js"] > 0.5 * np.log(2)


@pytest.mark.slow
def test_estimator_attributes(tasks):
    est = tasks[("blobs", 2)]["estimator"]
    assert est.labels_.shape == (N,) and est.labels_.dtype == np.int64
    assert set(est.history_) >= {"loss", "js", "rc", "objective"}
    assert len(est.history_["loss"]) == est.n_epochs_
    assert len(est.restarts_) == 3
    formed = [r for r in range(3) if est.restarts_[r]["formed"]]
    kept = min(formed, key=lambda r: est.restarts_[r]["objective"])
    assert est.restart_ == kept
    assert est.loss_ == pytest.approx(np.log(2) - est.js_, abs=1e-5)
    assert est.n_features_in_ == 2


@pytest.mark.slow
def test_predict_proba_predict_and_tensors(tasks):
    est = tasks[("moons", 512)]["estimator"]
    X, _ = make_manifolds("moons", N, seed=SEED, dim=512)
    P = est.predict_proba(X)
    assert P.shape == (N, 2) and P.dtype == np.float32
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(est.predict(X), est.labels_)
    np.testing.assert_array_equal(est.predict(torch.from_numpy(X)), est.labels_)


@pytest.mark.slow
def test_decision_grid_uses_the_lift(tasks):
    t = tasks[("circles", 512)]
    xs, ys, Z = decision_grid(t["estimator"].predict, t["X"], Lift(512, SEED), 30)
    assert Z.shape == (30, 30) and set(np.unique(Z)) == {0, 1}
    # the grid's centre lies in the inner ring's region
    inner = np.bincount(t["labels"][t["y"] == 1]).argmax()
    assert Z[15, 15] == inner
    fig = labels_grid_figure(list(tasks.values()), cols=4)
    assert len(fig.data) == 16  # a heatmap and a scatter per task


@pytest.mark.filterwarnings("ignore:no restart formed")  # short fits
def test_same_seed_same_labels():
    X, _ = make_manifolds("moons", 300, seed=1)
    kw = {"max_epochs": 30, "progress": False, "random_state": 3}
    a = ManifoldLabeler(2, **kw).fit(X)
    b = ManifoldLabeler(2, **kw).fit(X)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.history_["loss"] == b.history_["loss"]
    c = ManifoldLabeler(2, **(kw | {"random_state": 4})).fit(X)
    assert c.history_["loss"] != a.history_["loss"]


@pytest.mark.slow
def test_beta_zero_cuts_through_the_circles():
    # Theorem 2: without continuity nothing favours the manifolds; on the
    # circles an unregularised network cuts through both rings
    X, y = make_manifolds("circles", N, seed=SEED)
    est = ManifoldLabeler(2, beta=0.0, progress=False, random_state=SEED).fit(X)
    assert est.js_ > 0.4  # it does find a high-divergence partition ...
    assert adjusted_rand(y, est.labels_) < 0.5  # ... but not the rings


@pytest.mark.slow
def test_a_merged_restart_is_not_kept_even_with_the_lowest_objective(tasks):
    # spirals 512-D, seed 0: restart 1 merges two arms (two states used) and
    # reaches the lowest objective; the kept one uses all three states
    est = tasks[("spirals", 512)]["estimator"]
    merged = [r for r in est.restarts_ if r["n_used"] < 3]
    assert merged and not any(r["formed"] for r in merged)
    assert min(r["objective"] for r in merged) < est.objective_
    assert est.restarts_[est.restart_]["n_used"] == 3


def test_more_restarts_until_one_forms_then_lowest_objective():
    X, _ = make_manifolds("moons", 200, seed=0)
    # two epochs never form a partition: all max_restarts run, the kept one
    # uses the most states (then has the lowest objective), with a warning
    est = ManifoldLabeler(2, max_epochs=2, max_restarts=3, progress=False)
    with pytest.warns(RuntimeWarning, match="no restart formed a partition of 2"):
        est.fit(X)
    assert len(est.restarts_) == 3
    assert not any(r["formed"] for r in est.restarts_)
    keys = [(-r["n_used"], r["objective"]) for r in est.restarts_]
    assert est.restart_ == min(range(3), key=keys.__getitem__)
    # with enough epochs the first restart forms and no other is trained
    est = ManifoldLabeler(2, max_epochs=150, max_restarts=3, progress=False).fit(X)
    assert len(est.restarts_) == 1 and est.restarts_[0]["formed"]
    with pytest.raises(
        ValueError,
        match=r"max_restarts must be >= n_restarts \(3 by default, K=3\), got 2",
    ):
        ManifoldLabeler(3, max_restarts=2).fit(X)
    with pytest.raises(ValueError, match=r"n_restarts \(4\), got 3"):
        ManifoldLabeler(3, n_restarts=4, max_restarts=3).fit(X)


def test_without_a_formed_restart_the_most_states_win_over_the_objective():
    # a restart that labels everything alike has the lowest objective (no
    # boundary at all) but must not be kept over one that uses both states
    X, _ = make_manifolds("circles", 200, seed=0)
    est = ManifoldLabeler(2, max_epochs=20, hidden=(32, 32), n_restarts=2,
                          max_restarts=5, progress=False)  # fmt: skip
    with pytest.warns(RuntimeWarning, match="no restart formed"):
        est.fit(X)
    used = [r["n_used"] for r in est.restarts_]
    assert est.restarts_[est.restart_]["n_used"] == max(used) == 2
    assert len(np.unique(est.labels_)) == 2


def test_sklearn_params_roundtrip():
    est = ManifoldLabeler(3, beta=2.0, hidden=(16, 16))
    assert est.get_params()["beta"] == 2.0
    est.set_params(beta=0.5, n_restarts=2)
    assert est.beta == 0.5 and est.n_restarts == 2
    assert clone(est).get_params()["n_manifolds"] == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_manifolds": 1}, "n_manifolds must be >= 2, got 1"),
        ({"beta": -0.5}, "beta must be >= 0, got -0.5"),
        ({"max_epochs": 0}, "max_epochs must be >= 1, got 0"),
        ({"n_restarts": 0}, "n_restarts must be >= 1, got 0"),
        ({"lr": 0.0}, "lr must be > 0"),
    ],
)
def test_bad_parameters(kwargs, match):
    X, _ = make_manifolds("moons", 50, seed=0)
    with pytest.raises(ValueError, match=match):
        ManifoldLabeler(**kwargs).fit(X)


def test_bad_data():
    est = ManifoldLabeler(3, max_epochs=1, progress=False)
    X = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(ValueError, match=r"NaN or inf in 1 row\(s\) \(first: row 4\)"):
        est.fit(np.where(np.arange(20)[:, None] == 4, np.nan, X))
    with pytest.raises(ValueError, match="NaN or inf"):
        est.fit(np.where(np.arange(20)[:, None] == 0, np.inf, X))
    with pytest.raises(ValueError, match=r"X has 2 row\(s\) but n_manifolds=3"):
        est.fit(X[:2])
    with pytest.raises(ValueError, match="beyond float32's range"):
        est.fit(X.astype(np.float64) * 1e39)  # finite, but inf in float32
    with pytest.raises(ValueError, match=r"must be 2-D .* got shape \(20,\)"):
        est.fit(X[:, 0])
    with pytest.raises(TypeError, match="hidden must be a non-empty sequence"):
        ManifoldLabeler(hidden=()).fit(X)


@pytest.mark.filterwarnings("ignore:no restart formed")  # short fits
def test_predict_before_fit_and_wrong_width():
    X = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(NotFittedError):
        ManifoldLabeler().predict(X)
    with pytest.raises(NotFittedError):
        ManifoldLabeler().predict_proba(X)
    X, _ = make_manifolds("blobs", 60, seed=0)
    est = ManifoldLabeler(3, max_epochs=2, n_restarts=1, progress=False).fit(X)
    with pytest.raises(ValueError, match="X has 5 features, but the model was"):
        est.predict(np.zeros((4, 5)))


def test_baselines():
    X, y = make_manifolds("blobs", 300, seed=0)
    assert adjusted_rand(y, baseline_labels(X, 3, "kmeans")) == 1.0
    Xm, ym = make_manifolds("moons", 300, seed=0)
    assert adjusted_rand(ym, baseline_labels(Xm, 2, "kmeans")) < 0.6
    assert adjusted_rand(ym, baseline_labels(Xm, 2, "spectral")) == 1.0
    with pytest.raises(ValueError, match="method='dbscan' is not allowed"):
        baseline_labels(X, 3, "dbscan")


@pytest.mark.filterwarnings("ignore:no restart formed")
def test_numpy_numbers_are_accepted_as_parameters():
    # what grid searches and np.arange-built settings pass
    X, _ = make_manifolds("moons", 60, seed=0)
    params = {"max_epochs": np.int64(2), "beta": np.float32(0.5)}
    est = ManifoldLabeler(np.int64(2), **params, progress=False).fit(X)
    assert est.beta_ == 0.5 and est.n_epochs_ == 2
    with pytest.raises(TypeError, match="n_manifolds must be an integer"):
        ManifoldLabeler(np.float64(2.0)).fit(X)
