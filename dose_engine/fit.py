"""``python -m dose_engine.fit [OUT.json]``: refit the shipped 6 MV beam model.

See :mod:`dose_engine._fit` for the procedure.
"""

from ._fit import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
