"""The package's imports flow one way, down the data flow, and the command starts without the engine."""

import subprocess
import sys

import pytest


def imported_after(statement: str) -> set[str]:
    """The annotomo modules (and torch) that `statement` imports, in a fresh interpreter."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith(('annotomo', 'torch'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import annotomo.batch, annotomo.cluster", {"annotomo.api", "annotomo.cli"}),
        ("import annotomo.volumes", {"annotomo.outputs", "annotomo.batch", "annotomo.api"}),
        ("import annotomo.outputs", {"annotomo.volumes", "annotomo.batch", "annotomo.api"}),
        ("import annotomo.normalize, annotomo.postprocess", {"annotomo.api", "annotomo.batch", "torch"}),
        ("from annotomo.cli import main", {"torch", "annotomo.api", "annotomo.training"}),
    ],
)
def test_a_lower_module_imports_nothing_above_it(statement, forbidden):
    assert not imported_after(statement) & forbidden


@pytest.mark.slow
def test_the_api_is_still_one_import_away():
    names = imported_after("import annotomo; annotomo.segment, annotomo.train, annotomo.Predictor")
    assert {"annotomo.api", "annotomo.training", "annotomo.predict"} <= names
    import annotomo

    assert set(annotomo.__all__) <= set(dir(annotomo))
    with pytest.raises(AttributeError):
        annotomo.no_such_thing  # noqa: B018


def test_no_api_name_is_shadowed_by_a_submodule():
    """Importing annotomo.X sets the attribute X on the package: an API name equal to a module's would
    then be the module, depending on what was imported before."""
    import pkgutil

    import annotomo

    modules = {m.name for m in pkgutil.iter_modules(annotomo.__path__)}
    assert not modules & set(annotomo.__all__)
    import annotomo.suggestions  # noqa: F401

    assert callable(annotomo.suggest)
