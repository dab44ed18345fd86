"""Sphinx configuration of the API reference, built from the docstrings by ``make docs`` (warnings are errors).

The docstrings are reStructuredText (``:class:`` roles, ``.. math::``) with Google-style ``Args:`` sections, so
autodoc + napoleon render them as written; mathjax typesets the formulas when the page is opened.
"""

from sphinx.ext.napoleon import Config, GoogleDocstring

project = "egalitarian"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax"]  # napoleon: setup() below
autodoc_default_options = {"undoc-members": True, "member-order": "bysource"}  # each page says :members:
autodoc_inherit_docstrings = False  # torch's own docstrings (Optimizer.zero_grad, ...) are torch's to render
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # a default shows as written (NS_MUON), not as its repr
html_theme = "alabaster"
html_static_path: list[str] = []
# Every reference to this package's own objects must resolve (-n); references to torch, numpy and the standard
# library cannot without intersphinx, which would need the network at build time.
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(torch|nn|numpy|np|optuna|matplotlib|collections|typing|pathlib|sqlite3)\b.*"),
                        (r"py:.*", r"(Tensor|Optimizer|Path|Any|Callable|Iterable|Iterator|Sequence|Mapping)"),
                        (r"py:class", r"State|UpdateMany|egalitarian\.rundir\.MetricRow"),  # type aliases in signatures
                        (r"py:class", r"dict\[str")]  # Sphinx splits a dataclass field's dict[str, Any] at the comma


def setup(app):
    """Napoleon's Google-style sections, except on constants: napoleon reads a constant's first line
    ``"The window: …"`` as ``type: description``, and these docstrings mean a sentence."""
    google = Config(napoleon_numpy_docstring=False)

    def sections(app, what, name, obj, options, lines):
        if what not in ("data", "attribute", "property"):
            lines[:] = GoogleDocstring(lines, google, app, what, name, obj, options).lines()

    app.connect("autodoc-process-docstring", sections)
