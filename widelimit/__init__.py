"""widelimit: sparse dictionaries and SAEs in the wide-dictionary limit (Dorrell 2026)."""

from ._lower_bound import LowerBound as LowerBound
from ._lower_bound import wide_lower_bound as wide_lower_bound
from ._objective import dictionary_loss as dictionary_loss
from ._results import RESULTS as RESULTS
from ._solve_wide import solve_wide as solve_wide
from ._solve_wide import solve_wide_path as solve_wide_path
from ._wide_solution import WideSolution as WideSolution
from ._wide_solver import WideSolver as WideSolver

__version__ = "0.1.0"
