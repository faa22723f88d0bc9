"""widelimit: sparse dictionaries and SAEs in the wide-dictionary limit (Dorrell 2026)."""

__version__ = "0.1.0"

from . import datasets as datasets
from ._codes import decode as decode
from ._codes import encode as encode
from ._conditions import OptimalityReport as OptimalityReport
from ._conditions import check_optimality as check_optimality
from ._dictionary import DictionaryFit as DictionaryFit
from ._dictionary import fit_dictionary as fit_dictionary
from ._epochs import History as History
from ._fit_io import load_fit as load_fit
from ._fit_io import load_saelens as load_saelens
from ._fit_io import save_fit as save_fit
from ._fit_io import save_saelens as save_saelens
from ._hull_table import HullTable as HullTable
from ._hull_table import hull_table as hull_table
from ._lower_bound import LowerBound as LowerBound
from ._lower_bound import wide_lower_bound as wide_lower_bound
from ._objective import dictionary_loss as dictionary_loss
from ._pair_classes import PairClasses as PairClasses
from ._pair_classes import classify_pairs as classify_pairs
from ._pair_hull import PairHull as PairHull
from ._pair_hull import Perturbation as Perturbation
from ._pair_hull import apply_perturbation as apply_perturbation
from ._pair_hull import pair_hull as pair_hull
from ._pair_hull import separating_perturbation as separating_perturbation
from ._results import RESULTS as RESULTS
from ._sae import ReluSAE as ReluSAE
from ._sae import amortisation_gap as amortisation_gap
from ._sae import sae_loss as sae_loss
from ._sae import train_sae as train_sae
from ._seeds import fit_dictionary_seeds as fit_dictionary_seeds
from ._sklearn import DictionaryLearner as DictionaryLearner
from ._solve_wide import solve_wide as solve_wide
from ._solve_wide import solve_wide_path as solve_wide_path
from ._split import grow as grow
from ._split import split_atoms as split_atoms
from ._split_tree import SplitTree as SplitTree
from ._split_tree import split_tree as split_tree
from ._sweep import Sweep as Sweep
from ._sweep import load_sweep as load_sweep
from ._sweep import width_sweep as width_sweep
from ._wide_solution import WideSolution as WideSolution
from ._wide_solver import WideSolver as WideSolver
