"""``python -m dose_engine.fit``: commission a beam model from measured data.

``python -m dose_engine.fit --measurements DIR [--out model.json]`` fits and validates a model
from a folder of ``.mcc`` scans and ``commissioning.toml``; ``python -m dose_engine.fit
[OUT.json]`` refits the shipped 6 MV model.  See :mod:`dose_engine._commission_cli`,
:mod:`dose_engine._measured` (input format) and :mod:`dose_engine._fit` (procedure).
"""

from ._commission_cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
