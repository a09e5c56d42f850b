"""Run the teaching notebooks and the default experiments headless.

Usage: python scripts/run_notebooks.py [--profile cpu|smoke|paper] [--out DIR]

Each notebook runs with papermill into a fresh folder under ``runs/``;
experiment notebooks also write ``results.json`` there, summarised at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# teaching notebooks first, then the experiments that take a profile
TEACHING = ["lemma1.ipynb", "theorem1.ipynb", "priors.ipynb", "dml_manifolds.ipynb"]
EXPERIMENTS = ["mnist.ipynb"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    # absolute: the notebooks run with notebooks/ as their working folder
    out = (args.out or ROOT / "runs" / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    if out.exists():
        parser.error(f"--out {out} exists already; name a new folder")
    out.mkdir(parents=True)

    summaries = []
    for name in TEACHING + EXPERIMENTS:
        source = NOTEBOOKS / name
        if not source.exists():
            print(f"skip {name}: not in this version of the kit")
            continue
        params = {}
        if name in EXPERIMENTS:
            params = {"profile": args.profile, "output_dir": str(out / source.stem)}
        start = time.perf_counter()
        print(f"run {name} ...", flush=True)
        papermill.execute_notebook(
            str(source),
            str(out / name),
            parameters=params,
            cwd=str(NOTEBOOKS),
            progress_bar=False,
        )
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
        results = out / source.stem / "results.json"
        if results.exists():
            summaries.append(json.loads(results.read_text()))

    print(f"\nexecuted notebooks are in {out}")
    for result in summaries:
        print(
            f"\n{result['notebook']} ({result['dataset']}, profile "
            f"{result['profile']}, {result['wall_seconds']:.0f} s on "
            f"{result['device']}); probe accuracy on the whole test set:"
        )
        for row in result["rows"]:
            paper = row.get("paper") or {}
            paper_text = ""
            if paper.get("accuracy") is not None:
                paper_text = f"   paper {paper['accuracy']:.2%}"
                if paper.get("random") is not None:
                    paper_text += f" vs {paper['random']:.2%}"
            print(
                f"  {row['method']:17} {row['features']:27} {row['probe']:22}"
                f" learned {row['accuracy']:6.2%}  random "
                f"{row['random_accuracy']:6.2%}{paper_text}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
