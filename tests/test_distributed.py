"""Two gloo processes on the CPU match one process with the global batch.

One spawn runs every distributed case (MIM and DML steps, and the real
training loops) and saves what each rank saw; the tests compare that with
the single-process run on the same data, in float64, to 1e-5.
"""

import copy
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nbkit.bayes import expectation, prior
from nbkit.distributed import (
    GlobalBatchNorm,
    all_reduce_sum,
    global_batch,
    mean_over_ranks,
    rank_world,
    wrap_model,
)
from nbkit.models import MLP, MIMEncoder
from nbkit.train import TIMING_KEYS, dml_step, mim_step, train_dml, train_mim

WORLD = 2
TOL = 1e-5
LOOP = {"progress": False, "device": "cpu", "checkpoint_every": None}


# ---------------------------------------------------------------- the cases
# each builder is called with float64 as the default dtype


def _images():
    g = torch.Generator().manual_seed(0)
    return torch.randn(32, 3, 24, 24, generator=g)


def _points():
    g = torch.Generator().manual_seed(1)
    return torch.randn(48, 5, generator=g)


def _cnn():
    torch.manual_seed(0)
    return MIMEncoder(3, width=0.02)  # channels 4-10-14-20, with batch norm


def _mlp():
    torch.manual_seed(0)
    return MLP(5, (8, 8), out_features=3)  # batch norm in both layers


def _step(kind, model, X, rank=0, world=1):
    """One objective on this rank's shard; returns values and grads."""
    m = X.shape[0] // world
    xb = X[rank * m : (rank + 1) * m]
    gen = torch.Generator().manual_seed(5)
    if kind == "mim":
        out = mim_step(model, xb, alpha=2.0, beta=4.0, generator=gen)
    else:
        out = dml_step(model, xb, beta=1.0, generator=gen)
    out["loss"].backward()
    params = model.module if world > 1 else model
    return {
        "values": {k: v.detach().clone() for k, v in out.items()},
        "grads": [p.grad.clone() for p in params.parameters()],
        "state": copy.deepcopy(params.state_dict()),
    }


def _train(kind, model):
    sizes = set()  # batch sizes the model saw: the shard under DDP
    model.register_forward_pre_hook(lambda mod, args: sizes.add(args[0].shape[0]))
    if kind == "train_mim":
        X = _images()
        hist = train_mim(model, X, epochs=2, mbs=8, bs=16, beta=4.0, **LOOP)
    else:
        X = _points()
        hist = train_dml(model, X, epochs=3, batch_size=16, beta=1.0, **LOOP)
    hist = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in hist]
    return {"history": hist, "state": copy.deepcopy(model.state_dict()), "sizes": sizes}


def _run_case(case, rank, world):
    if case in ("mim", "dml"):
        model, X = (_cnn(), _images()[:16]) if case == "mim" else (_mlp(), _points())
        if world > 1:
            model = wrap_model(model, "cpu")
        with global_batch():
            return _step(case, model, X, rank, world)
    return _train(case, _cnn() if case == "train_mim" else _mlp())


CASES = ("mim", "dml", "train_mim", "train_dml")


def _worker(rank, world, port, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        torch.set_default_dtype(torch.float64)
        res = {case: _run_case(case, rank, world) for case in CASES}
        res["collectives"] = _collectives(rank, world)
        torch.save(res, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _collectives(rank, world):
    """The building blocks on known numbers: sums, means and their grads."""
    x = torch.tensor([1.0, 2.0]) * (rank + 1)  # rank 0: [1, 2]; rank 1: [2, 4]
    x.requires_grad_(True)
    (all_reduce_sum(x) * torch.tensor([1.0, 10.0])).sum().backward()
    T = torch.full((rank + 1, 3), float(rank + 1))  # 1 row of 1s, 2 rows of 2s
    with global_batch():
        E = expectation(T)
        p = prior(torch.softmax(torch.zeros(rank + 2, 4), dim=1))
    return {
        "sum_grad": x.grad,
        "global_mean": E,
        "prior": p,
        "rank_world": rank_world(),
        "mean_over_ranks": mean_over_ranks(torch.tensor([float(rank)])),
    }


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks computed, one spawn for the whole module."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    """The same cases in one process, on the global batch."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return {case: _run_case(case, 0, 1) for case in CASES}
    finally:
        torch.set_default_dtype(old)


def _close(a, b):
    return torch.allclose(a, b, rtol=TOL, atol=TOL)


# ---------------------------------------------------------------- the tests


def test_collectives_on_known_numbers(ranks):
    for r, res in enumerate(ranks):
        c = res["collectives"]
        # d/dx of sum(w * allreduce(x)) summed over both ranks' losses: 2 w
        assert c["sum_grad"].tolist() == [2.0, 20.0]
        # (1 * 1 + 2 * 2) / 3 rows, not the mean of the two local means
        assert c["global_mean"].tolist() == pytest.approx([5 / 3] * 3, rel=1e-12)
        assert c["prior"].tolist() == pytest.approx([0.25] * 4, rel=1e-12)
        assert c["rank_world"] == (r, WORLD)
        assert c["mean_over_ranks"].tolist() == [0.5]


def test_outside_a_process_group_nothing_changes():
    T = torch.arange(6.0).reshape(3, 2)
    with global_batch() as reducer:
        assert reducer is None
        assert torch.equal(expectation(T), T.mean(dim=0))
    assert rank_world() == (0, 1)


@pytest.mark.parametrize("kind", ["mim", "dml"])
def test_step_matches_one_process(ranks, single, kind):
    ref = single[kind]
    loss = torch.stack([r[kind]["values"]["loss"] for r in ranks]).mean()
    assert _close(loss, ref["values"]["loss"])  # DDP averages the rank losses
    assert ref["values"]["smoothness"] > 0  # Rc really took part
    if kind == "mim":  # Rp uses the global E[L]: equal on every rank
        for r in ranks:
            assert _close(r[kind]["values"]["prior"], ref["values"]["prior"])
    for r in ranks:
        for g, g_ref in zip(r[kind]["grads"], ref["grads"], strict=True):
            assert _close(g, g_ref)
        for k, v in ref["state"].items():  # global running statistics
            assert _close(r[kind]["state"][k].double(), v.double()), k


def test_local_statistics_would_not_match(single):
    # the check above is sharp: E[L] of one shard differs from the global one
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        half = _step("mim", _cnn(), _images()[:8])
    finally:
        torch.set_default_dtype(old)
    assert not _close(half["values"]["prior"], single["mim"]["values"]["prior"])


@pytest.mark.parametrize("kind", ["train_mim", "train_dml"])
def test_training_loop_matches_one_process(ranks, single, kind):
    ref = single[kind]
    assert ref["sizes"] == {16 if kind == "train_dml" else 8}
    for r in ranks:
        assert r[kind]["sizes"] == {x // WORLD for x in ref["sizes"]}  # shards
        for k, v in ref["state"].items():
            assert _close(r[kind]["state"][k].double(), v.double()), k
        for rec, rec_ref in zip(r[kind]["history"], ref["history"], strict=True):
            for key, value in rec_ref.items():
                assert rec[key] == pytest.approx(value, rel=TOL, abs=TOL), key
    moved = [
        not torch.equal(v, _cnn().state_dict()[k])
        for k, v in ref["state"].items()
        if kind == "train_mim" and v.is_floating_point()
    ]
    assert kind != "train_mim" or all(moved)  # training really changed weights


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    gbn = GlobalBatchNorm(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(bn(x), gbn(x))
    assert torch.allclose(bn.running_var, gbn.running_var)


@pytest.mark.slow
def test_torchrun_script_trains_and_saves_loadable_weights(tmp_path):
    # the README's command, end to end: 2 CPU processes on fake CIFAR-10 files
    import subprocess
    import sys
    from pathlib import Path

    from fakedata import write_cifar

    write_cifar(tmp_path / "data", n_train=40, n_test=10)
    script = Path(__file__).resolve().parents[1] / "scripts" / "train_mim_ddp.py"
    out = tmp_path / "encoder.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(script), "--dataset", "cifar10"]
    command += ["--data-dir", str(tmp_path / "data"), "--epochs", "1"]
    command += ["--mbs", "8", "--bs", "16", "--width", "0.05", "--output", str(out)]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    state = torch.load(out, weights_only=True)
    model = MIMEncoder(3, 0.05)
    model.load_state_dict(state)  # plain MIMEncoder keys, no DDP prefix
    assert all(torch.isfinite(v).all() for v in state.values())
