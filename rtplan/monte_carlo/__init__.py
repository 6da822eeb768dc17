"""An independent Monte Carlo check of a plan's dose (ompMC, run in its own process).

ompMC is GPL-3; rtplan (BSD-3) never imports it. :func:`monte_carlo_dose` writes the job's
arrays and starts :mod:`rtplan.monte_carlo._runner` as a separate Python process;
:func:`compare_with_monte_carlo` compares any dose with the result (gamma with pymedphys,
DVH metrics). ``rtplan check-mc`` runs both on an RT-PLAN. Install with
``pip install "rtplan[mc]"``.
"""

from ._compare import DoseComparison, compare_with_monte_carlo
from ._run import MonteCarloDose, monte_carlo_dose

__all__ = ["DoseComparison", "MonteCarloDose", "compare_with_monte_carlo", "monte_carlo_dose"]
