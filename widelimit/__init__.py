"""widelimit: sparse dictionaries and SAEs in the wide-dictionary limit (Dorrell 2026)."""

__version__ = "0.1.0"

from . import datasets as datasets
from ._analysis.conditions import OptimalityReport as OptimalityReport
from ._analysis.conditions import check_optimality as check_optimality
from ._analysis.hull_table import HullPairs as HullPairs
from ._analysis.hull_table import HullTable as HullTable
from ._analysis.hull_table import hull_table as hull_table
from ._analysis.lower_bound import LowerBound as LowerBound
from ._analysis.lower_bound import wide_lower_bound as wide_lower_bound
from ._analysis.pair_classes import PairClasses as PairClasses
from ._analysis.pair_classes import classify_pairs as classify_pairs
from ._analysis.pair_hull import PairHull as PairHull
from ._analysis.pair_hull import Perturbation as Perturbation
from ._analysis.pair_hull import Perturbed as Perturbed
from ._analysis.pair_hull import apply_perturbation as apply_perturbation
from ._analysis.pair_hull import pair_hull as pair_hull
from ._analysis.pair_hull import separating_perturbation as separating_perturbation
from ._analysis.sae_conditions import ImpliedLam as ImpliedLam
from ._analysis.sae_conditions import SAEStationarity as SAEStationarity
from ._analysis.sae_conditions import applicable_conditions as applicable_conditions
from ._analysis.sae_conditions import implied_lam as implied_lam
from ._analysis.sae_conditions import sae_stationarity as sae_stationarity
from ._analysis.sae_report import SAEReport as SAEReport
from ._analysis.sae_report import check_sae as check_sae
from ._analysis.split_tree import SplitTree as SplitTree
from ._analysis.split_tree import split_tree as split_tree
from ._analysis.sweep import Sweep as Sweep
from ._analysis.sweep import load_sweep as load_sweep
from ._analysis.sweep import width_sweep as width_sweep
from ._core.code_store import CodeStore as CodeStore
from ._core.code_store import load_codes as load_codes
from ._core.objective import dictionary_loss as dictionary_loss
from ._core.results import RESULTS as RESULTS
from ._core.sparse_codes import SparseCodes as SparseCodes
from ._core.store import ActivationStore as ActivationStore
from ._finite.codes import CodeSolution as CodeSolution
from ._finite.codes import decode as decode
from ._finite.codes import encode as encode
from ._finite.codes import solve_codes as solve_codes
from ._finite.epochs import History as History
from ._finite.fit import DictionaryFit as DictionaryFit
from ._finite.fit import fit_dictionary as fit_dictionary
from ._finite.fit_file import load_fit as load_fit
from ._finite.fit_file import save_fit as save_fit
from ._finite.seeds import fit_dictionary_seeds as fit_dictionary_seeds
from ._finite.solver import DictionarySolver as DictionarySolver
from ._finite.solver import FitState as FitState
from ._finite.split import Grown as Grown
from ._finite.split import Split as Split
from ._finite.split import grow as grow
from ._finite.split import split_atoms as split_atoms
from ._sae.amortisation import AmortisationGap as AmortisationGap
from ._sae.amortisation import amortisation_gap as amortisation_gap
from ._sae.base import AbstractSAE as AbstractSAE
from ._sae.batchtopk import BatchTopKSAE as BatchTopKSAE
from ._sae.batchtopk import MatryoshkaSAE as MatryoshkaSAE
from ._sae.gated import GatedSAE as GatedSAE
from ._sae.jumprelu import JumpReLUSAE as JumpReLUSAE
from ._sae.standard import ReluSAE as ReluSAE
from ._sae.standard import sae_loss as sae_loss
from ._sae.topk import AbsTopKSAE as AbsTopKSAE
from ._sae.topk import TopKSAE as TopKSAE
from ._sae.train import SAETraining as SAETraining
from ._sae.train import train_sae as train_sae
from ._wide.solution import WideSolution as WideSolution
from ._wide.solve import solve_wide as solve_wide
from ._wide.solve import solve_wide_path as solve_wide_path
from ._wide.solver import WideSolver as WideSolver
from .io import load_saelens as load_saelens
from .io import save_saelens as save_saelens


def __getattr__(name: str):
    # scikit-learn is optional: the estimator is imported on first use (PEP 562)
    if name == "DictionaryLearner":
        try:
            from ._finite.sklearn import DictionaryLearner
        except ModuleNotFoundError as e:
            if (e.name or "").partition(".")[0] != "sklearn":
                raise
            raise ImportError(
                "DictionaryLearner needs scikit-learn: pip install 'widelimit[sklearn]'"
            ) from e
        return DictionaryLearner
    raise AttributeError(f"module 'widelimit' has no attribute {name!r}")
