"""``python -m dose_engine.fit``: commission a beam model from measured data.

``python -m dose_engine.fit --measurements DIR|FILE... [--table T.toml] [--out model.json]
[--report R.html] [--hold-out XxY ...] [--overwrite]`` reads water-tank scans — a folder of
them or the files themselves: PTW ``.mcc``, Varian W2CAD or IBA OmniPro RFA300 ASCII,
recognised by content — and ``commissioning.toml`` (:mod:`dose_engine._measured`), fits the
model (:func:`~dose_engine.fit_beam_model`) without the ``--hold-out`` fields, validates it
against every scan (:func:`~dose_engine.compare_to_measured`), writes the model JSON and the
commissioning report (:mod:`dose_engine._commission_report`; default ``<out>_report.html``)
together and atomically, and prints the validation summary.  Without ``--measurements`` it
regenerates the shipped 6 MV model from the pymedphys data (``python -m dose_engine.fit
[OUT.json]``).

Exit status: 0 when the fit converged and the model and report were written and every
comparison meets the commissioning targets (:data:`~dose_engine._validation.TARGETS`), 1 when
they were written but some comparison is outside them (the scans are named on stdout and in
the report) or the fit stopped at ``--max-nfev`` before converging, 2 on bad input (one line
on stderr naming the file and the field; nothing is written), 3 on an internal error, 4 when a file
cannot be read or written, 5 over a resource limit, 130 when interrupted (the statuses of
``rtplan``; one line each, the traceback with ``RTPLAN_DEBUG=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from ._commission_report import commissioning_report_html
from ._fit import MAX_NFEV, fit_6mv_model, fit_beam_model, shape_from_model
from ._measured import hold_out, parse_field, read_measured_data
from ._model import BeamModel, load_beam_model
from ._validation import TARGETS, compare_to_measured
from .errors import DoseEngineError, ResourceLimitError

__all__ = ["main", "write_files_atomic", "write_json_atomic"]

SHIPPED_MODEL = Path(__file__).parent / "data" / "beam_model_6MV.json"


def write_json_atomic(params: dict, out: Path) -> None:
    """Write ``params`` as JSON to ``out`` through a temporary file in the same folder and
    :func:`os.replace`, so ``out`` is either the old file or the complete new one."""
    write_files_atomic({out: json.dumps(params, indent=1) + "\n"})


def write_files_atomic(texts: dict[Path, str]) -> None:
    """Write every ``{path: text}`` to a temporary file beside it, then move them all into
    place with :func:`os.replace`: a failure while writing leaves none of them written."""
    temps: dict[Path, str] = {}
    try:
        for out, text in texts.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
            temps[out] = tmp
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
        for out, tmp in temps.items():
            os.replace(tmp, out)
    except BaseException:
        for tmp in temps.values():
            Path(tmp).unlink(missing_ok=True)
        raise


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dose_engine.fit",
        description="Fit the pencil-beam model to measured water-tank data and validate it.",
    )
    p.add_argument(
        "legacy_out",
        nargs="?",
        metavar="OUT.json",
        help="without --measurements: refit the shipped 6 MV model from the pymedphys data "
        "and write it here (default: the shipped file)",
    )
    p.add_argument(
        "--measurements",
        metavar="DIR|FILE",
        type=Path,
        nargs="+",
        help="folder of scan files (.mcc, .asc, .cdp) with commissioning.toml, or scan files "
        "(PTW .mcc, W2CAD, OmniPro ASCII; see dose_engine._measured)",
    )
    p.add_argument(
        "--table",
        type=Path,
        help="commissioning table (default: commissioning.toml beside the first DIR or FILE)",
    )
    p.add_argument("--out", type=Path, help="model JSON to write (default ./beam_model.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument(
        "--max-nfev",
        type=int,
        default=MAX_NFEV,
        help=f"shape-fit evaluation budget (default {MAX_NFEV}; the fit stops on convergence)",
    )
    p.add_argument(
        "--start",
        metavar="MODEL.json",
        type=Path,
        help="start the shape fit from this model's parameters (e.g. the last commissioning)",
    )
    p.add_argument(
        "--electron-contamination",
        action="store_true",
        help="fit the electron-contamination term of the build-up (needs PDDs of several "
        "field sizes from the surface; docs/commissioning.md)",
    )
    p.add_argument("--no-gamma", action="store_true", help="skip the pymedphys gamma pass rates")
    p.add_argument(
        "--hold-out",
        metavar="XxY",
        action="append",
        default=[],
        help="field (mm, e.g. 200x200) left out of the fit and only validated (repeatable)",
    )
    p.add_argument(
        "--report",
        type=Path,
        help="commissioning report to write (default: OUT with the suffix _report.html)",
    )
    return p


def _gamma_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pymedphys") is not None


def _commission(args) -> int:
    out = args.out or Path("beam_model.json")
    report_path = args.report or out.with_name(f"{out.stem}_report.html")
    for path in (out, report_path):
        if path.exists() and not args.overwrite:
            raise DoseEngineError(f"{path} exists; pass --overwrite to replace it.")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"output folder {path.parent} does not exist.")
    measured = read_measured_data(args.measurements, table=args.table)
    held_out = tuple(parse_field(f, "--hold-out") for f in args.hold_out)
    fit_data = hold_out(measured, held_out)
    start = None if args.start is None else shape_from_model(load_beam_model(args.start).parameters)
    params = fit_beam_model(
        fit_data,
        max_nfev=args.max_nfev,
        start=start,
        electron_contamination=args.electron_contamination,
    )
    gamma = not args.no_gamma and _gamma_available()
    model = BeamModel(params, str(out))
    report = compare_to_measured(model, measured, gamma=gamma)
    page = commissioning_report_html(
        report,
        measured,
        params,
        fingerprint=model.fingerprint(),
        model_file=out.name,
        held_out_mm=held_out,
    )
    write_files_atomic({report_path: page, out: json.dumps(params, indent=1) + "\n"})
    sys.stdout.write(f"wrote {out} and {report_path}\n{report.summary(TARGETS)}\n")
    failed = [r["label"] for r in report.rows(TARGETS) if r["failed"]]
    if failed:
        sys.stdout.write(
            f"outside the commissioning targets ({len(failed)}): {'; '.join(failed)}\n"
        )
    if "mlc" in params:
        sys.stdout.write(
            "note: the MLC parameters of the table are in the model file; every aperture dose "
            "with this model applies them over the machine's defaults.\n"
        )
    return max(1 if failed else 0, _warn_unless_converged(params, args.max_nfev))


def _warn_unless_converged(params: dict, max_nfev: int) -> int:
    """1 (with a warning on stdout) when the written model's shape fit did not converge."""
    if params["provenance"]["residuals"]["converged"]:
        return 0
    sys.stdout.write(
        f"warning: the shape fit stopped at its budget of {max_nfev} evaluations before "
        "converging; its parameters depend on the solver's path. Raise --max-nfev.\n"
    )
    return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m dose_engine.fit`` (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.measurements is not None and args.legacy_out:
        parser.error("with --measurements give the output as --out, not positionally")
    try:
        if args.measurements is None:
            out = Path(args.legacy_out) if args.legacy_out else SHIPPED_MODEL
            params = fit_6mv_model(max_nfev=args.max_nfev)
            write_json_atomic(params, out)
            residuals = json.dumps(params["provenance"]["residuals"], indent=1)
            sys.stdout.write(f"wrote {out}\n{residuals}\n")
            return _warn_unless_converged(params, args.max_nfev)
        return _commission(args)
    except (Exception, KeyboardInterrupt) as exc:  # one line, never exit 1 ("written")
        if os.environ.get("RTPLAN_DEBUG", "") not in ("", "0"):
            import traceback

            traceback.print_exc()
        status, text = _status(exc)
        sys.stderr.write(f"error: {' '.join(text.split())}\n")
        return status


def _status(exc: BaseException) -> tuple[int, str]:
    """Exit status and message of a failure (the statuses of ``rtplan``'s CLI)."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted; nothing was written"
    if isinstance(exc, ResourceLimitError | MemoryError):
        return 5, str(exc) or "out of memory"
    if isinstance(exc, DoseEngineError):
        return 2, str(exc)
    if isinstance(exc, OSError):
        return 4, str(exc)
    return 3, f"internal error ({type(exc).__name__}: {exc}); rerun with RTPLAN_DEBUG=1"
