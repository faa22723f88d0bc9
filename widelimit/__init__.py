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

from ._codes import decode as decode
from ._codes import encode as encode
from ._conditions import OptimalityReport as OptimalityReport
from ._conditions import check_optimality as check_optimality
from ._dictionary import DictionaryFit as DictionaryFit
from ._dictionary import History as History
from ._dictionary import fit_dictionary as fit_dictionary
from ._sae import ReluSAE as ReluSAE
from ._sae import amortisation_gap as amortisation_gap
from ._sae import sae_loss as sae_loss
from ._sae import train_sae as train_sae
from ._sklearn import DictionaryLearner as DictionaryLearner
from ._split import grow as grow
from ._split import split_atoms as split_atoms
