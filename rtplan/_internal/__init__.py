"""rtplan's private plumbing, shared by every domain package and importing none of them.

- :mod:`.atomic` — atomic writes (temporary sibling, then rename) and output checks;
- :mod:`.toml_files` — the one TOML reader ("a shipped name or a path") of machines,
  protocols and batch manifests;
- :mod:`.arguments` — type checks of public-API arguments;
- :mod:`.messages` — quoting values in error messages;
- :mod:`.exit_status` — how an exception maps to a CLI exit status;
- :mod:`.version` — ``__version__``, written into every DICOM object.
"""
