"""MIM training of the paper's CNN on N processes with DistributedDataParallel.

Run with torchrun, one process per GPU (or CPU processes with gloo)::

    torchrun --nproc_per_node=4 scripts/train_mim_ddp.py --dataset cifar10 \
        --epochs 100 --mbs 500 --bs 4000

``--mbs`` and ``--bs`` are global sizes: each process takes mbs / N samples
of every mini-batch, and E[L], batch norm and Rc see the whole mini-batch,
so the run matches one process with the same settings (see
``nbkit.distributed``). Rank 0 writes the encoder's weights to ``--output``.
"""

from nbkit.distributed import main

if __name__ == "__main__":
    main()
