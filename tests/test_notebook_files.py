"""Every notebook is a jupytext pair in sync, without outputs, with a kernel."""

from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("*.py"))


def test_there_are_notebooks():
    assert SOURCES, f"no .py notebooks found in {NOTEBOOKS}"


def cells(nb):
    """What must agree between the pair: type, source and tags of each cell."""
    return [
        (c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ())))
        for c in nb.cells
    ]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_is_in_sync(source):
    paired = source.with_suffix(".ipynb")
    assert paired.exists(), f"{paired.name} missing: run `make sync`"
    from_py = jupytext.read(source)
    from_ipynb = nbformat.read(paired, as_version=4)
    assert cells(from_py) == cells(from_ipynb), (
        f"{source.name} and {paired.name} differ: run `make sync`"
    )


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_source_names_its_kernel_and_has_a_parameters_cell(source):
    nb = jupytext.read(source)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", ())]
    assert len(tagged) == 1, f"{source.name} needs one cell tagged 'parameters'"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_ipynb_is_committed_without_outputs(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs, f"{source.stem}.ipynb has stored outputs"
            assert cell.execution_count is None
