"""Sphinx configuration: the API reference, the Markdown pages and the example gallery.

Build (warnings are errors, as in CI)::

    pip install -e ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The API pages are written at build time from each public namespace's ``__all__`` (see
:func:`write_api_pages`), so a name that is added, renamed or moved appears under its public
import path (``rtplan.plan_patient``) without editing these pages, and private module paths
(``rtplan._patient``) never do.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import tempfile
import types
from pathlib import Path

import rtplan

DOCS = Path(__file__).resolve().parent
API = DOCS / "api"

project = "rtplan"
author = "the rtplan developers"
copyright = "the rtplan developers"
release = version = rtplan.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.extlinks",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip"]
templates_path = ["_templates"]
extlinks = {"doi": ("https://doi.org/%s", "doi:%s")}
# sphinx_gallery_conf holds a function (reset_argv), so Sphinx cannot cache the configuration
# between builds; that only costs a full rebuild.
suppress_warnings = ["config.cache"]
html_theme = "pydata_sphinx_theme"
html_title = f"rtplan {release}"
html_theme_options = {"navigation_with_keys": False}

# MyST reads the Markdown pages (docs/*.md; README.md and CHANGELOG.md through an include);
# headings get anchors so that "#section" links resolve.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# autodoc / autosummary / numpydoc
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"  # the numpydoc sections give types with shapes and units
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": False}
numpydoc_show_class_members = False  # the class template lists members itself
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# numpydoc validates every documented object; each finding is a warning (an error under -W).
# "all" but the checks the docstrings do not pass yet (counts on 2026-12-05, over the ~390
# documented objects): SA01 no See Also (391), EX01 no Examples (369), ES01 no extended
# summary (315), PR01 a parameter not documented (146), RT01 no Returns (116), PR07 a
# parameter without description (61), RT03 a return value without description (37), SS06
# summary over one line (23), GL02 closing quotes placement (21), RT02 return named like a
# parameter (14), PR04 a parameter without type (14), SS05 summary not in the infinitive
# (10), PR03 parameters in another order than the signature (1: plan_and_write).
numpydoc_validation_checks = {
    "all",
    "SA01",
    "EX01",
    "ES01",
    "PR01",
    "RT01",
    "PR07",
    "RT03",
    "SS06",
    "GL02",
    "RT02",
    "PR04",
    "SS05",
    "PR03",
}
# Special methods, and constants (UPPER_CASE: numpydoc would read their type's docstring).
numpydoc_validation_exclude = {r"\.__\w+__$", r"\.[A-Z][A-Z0-9_]*$"}

# sphinx-gallery: the scripts in examples/ are run (the C-shape example plans a coarse
# phantom in about 20 s) and rendered with their output. ``reset_argv`` gives each script
# a scratch output folder, removed when the build ends, so the plan it writes does not land
# in the checkout (the generated pages do: docs/api/ and docs/auto_examples/, git-ignored).
_GALLERY_OUT = tempfile.TemporaryDirectory(prefix="rtplan-docs-gallery-")


def _gallery_argv(gallery_conf, script_vars):
    """The command-line arguments an example is run with: a scratch output folder."""
    return [os.path.join(_GALLERY_OUT.name, Path(script_vars["src_file"]).stem)]


sphinx_gallery_conf = {
    "examples_dirs": str(DOCS.parent / "examples"),
    "gallery_dirs": str(DOCS / "auto_examples"),
    "filename_pattern": r"/plan_",  # every script whose name starts with plan_ is run
    "reset_argv": _gallery_argv,
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "min_reported_time": 0,
}

#: The public namespaces the reference covers; rtplan's public sub-packages are found below.
NAMESPACES = [
    "dose_engine",
    "dose_engine.errors",
    "dose_engine.fit",
    "optimizers",
    "optimizers.errors",
]

_MODULES, _CLASSES, _EXCEPTIONS, _FUNCTIONS, _CONSTANTS, _ALIASES = (
    "Sub-packages and modules",
    "Classes",
    "Exceptions and warnings",
    "Functions",
    "Constants",
    "Type aliases",
)
_TEMPLATES = {_CLASSES: "class.rst", _EXCEPTIONS: "exception.rst"}


def _rtplan_namespaces() -> list[str]:
    """``rtplan``, ``rtplan.errors`` and every public sub-package of rtplan (no ``_`` prefix)."""
    names = ["rtplan", "rtplan.errors"]
    for info in pkgutil.iter_modules(rtplan.__path__):
        if info.ispkg and not info.name.startswith("_") and info.name != "data":
            names.append(f"rtplan.{info.name}")
    return names


def _public_names(module: types.ModuleType) -> list[str]:
    """``__all__``, else the public names the module defines itself (an ``errors`` module)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    )


def _section(value: object) -> str:
    if isinstance(value, types.ModuleType):
        return _MODULES
    if inspect.isclass(value):
        return _EXCEPTIONS if issubclass(value, BaseException) else _CLASSES
    if getattr(value, "__module__", None) == "typing":  # Literal[...] and the like
        return _ALIASES
    if inspect.isroutine(value):
        return _FUNCTIONS
    return _CONSTANTS


def _homes(namespaces: list[str]) -> dict[int, str]:
    """The one namespace each re-exported class or function is documented in.

    A class or function that several namespaces export (``rtplan.Grid`` is
    ``dose_engine.Grid``; ``rtplan.DVH`` is ``rtplan.evaluation.DVH``) gets one page, in the
    namespace that is the longest dotted prefix of the module defining it; the others list
    it with a link there. Keyed by ``id`` of the object.
    """
    homes: dict[int, str] = {}
    for name in namespaces:
        module = importlib.import_module(name)
        for public in _public_names(module):
            value = getattr(module, public)
            if _section(value) in (_MODULES, _CONSTANTS, _ALIASES):
                continue
            defined_in = getattr(value, "__module__", "") or ""
            current = homes.get(id(value))
            if (defined_in + ".").startswith(name + ".") and (
                current is None or len(name) > len(current)
            ):
                homes[id(value)] = name
            elif current is None:
                homes[id(value)] = name
    return homes


def _module_page(name: str, homes: dict[int, str]) -> str:
    module = importlib.import_module(name)
    own: dict[str, list[str]] = {}
    elsewhere: dict[str, list[str]] = {}
    for public in _public_names(module):
        value = getattr(module, public)
        section = _section(value)
        shared = section in (_CLASSES, _EXCEPTIONS, _FUNCTIONS)  # documented once: _homes
        home = homes.get(id(value), name) if shared else name
        if home == name:
            own.setdefault(section, []).append(public)
        else:
            # relative to this namespace where the home is inside it (autosummary's rule)
            where = home[len(name) + 1 :] if home.startswith(name + ".") else home
            elsewhere.setdefault(section, []).append(f"~{where}.{public}")
    lines = [name, "=" * len(name), "", f".. automodule:: {name}", "   :no-members:", ""]
    lines += [f".. currentmodule:: {name}", ""]
    for section in (_MODULES, _CLASSES, _EXCEPTIONS, _FUNCTIONS, _CONSTANTS, _ALIASES):
        if section not in own and section not in elsewhere:
            continue
        lines += [section, "-" * len(section), ""]
        if section == _MODULES:
            lines += [f"- :doc:`{name}.{m}`" for m in own[section]] + [""]
            continue
        if section == _ALIASES:  # no docstring of their own: the definition says it all
            lines += [f"- ``{m}``: ``{getattr(module, m)!r}``" for m in own[section]] + [""]
            continue
        if section in own:
            lines += [".. autosummary::", "   :toctree: generated/"]
            lines += [f"   :template: {_TEMPLATES.get(section, 'base.rst')}", ""]
            lines += [f"   {m}" for m in own[section]] + [""]
        if section in elsewhere:
            lines += ["Also exported here (documented where they are defined):", ""]
            lines += [".. autosummary::", ""] + [f"   {m}" for m in elsewhere[section]] + [""]
    return "\n".join(lines)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:  # unchanged pages keep their mtime
        path.write_text(text)


def write_api_pages() -> list[str]:
    """Write ``docs/api/<namespace>.rst`` for every namespace and ``docs/api/index.rst``."""
    namespaces = _rtplan_namespaces() + NAMESPACES
    homes = _homes(namespaces)
    API.mkdir(exist_ok=True)
    for name in namespaces:
        _write_if_changed(API / f"{name}.rst", _module_page(name, homes))
    index = [
        "API reference",
        "=============",
        "",
        "Every public name, under its public import path, from each namespace's ``__all__``.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ] + [f"   {name}" for name in namespaces]
    _write_if_changed(API / "index.rst", "\n".join(index) + "\n")
    return namespaces


write_api_pages()
