"""The smallest planning protocol of the CLI tests: the C-shape phantom, 3 beams, 8 mm dose
grid, 40 iterations, two easy goals."""

from __future__ import annotations


def tiny_cshape_protocol(*, ring: bool) -> str:
    """TOML text of the protocol; ``ring`` adds the ring helper (and so a second influence
    matrix, of the helper rows)."""
    return f"""\
name = "tiny C-shape"
[prescription]
total_dose_gy = 50.0
fractions = 25
target = "PTV"
[structures.Core]
aliases = ["CentralCore"]
[[goals]]
structure = "PTV"
metric = "D95%"
min = 50.0
priority = 1
[[goals]]
structure = "Core"
metric = "D10%"
max = 40.0
priority = 1
[beams]
count = 3
[grid]
dose_grid_mm = 8.0
[optimization]
max_iterations = 40
sequencing_levels = 4
[helpers]
ring = {"true" if ring else "false"}
normal_tissue = false
"""
