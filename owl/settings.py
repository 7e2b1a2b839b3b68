"""Validated settings of one pruning run.

Field names follow the flags of the paper's code (``Hyper_m``, ``Lamda``) so a result file, a
command line and a notebook's parameters read the same. ``PruneSettings.validate`` checks
everything that can be checked without loading a model or data, so bad input fails before any
expensive work starts.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from owl.errors import OwlError

BASE_METHODS = ("magnitude", "wanda", "sparsegpt")
ALLOCATIONS = ("uniform", "owl", "dlp", "dsa", "alphapruning", "atp")  # owl.allocators.ALLOCATORS
# The paper code's names (wanda_owl, ...) and the same for every allocator (wanda_dlp, ...): an alias
# of --prune_method <base> --allocation <allocator>.
PRUNE_METHODS = (
    "dense",
    *BASE_METHODS,
    *(f"{base}_{allocation}" for allocation in ALLOCATIONS[1:] for base in BASE_METHODS),
    "wanda_owl_structure",
)
DLP_REDUCTIONS = ("mean", "median")  # mean: DLP's code; median: its paper
DTYPES = ("float32", "bfloat16", "float16", "auto")  # auto: owl.precision picks per device
CALIBRATION_DATASETS = ("c4", "wikitext2")
# Perplexity: WikiText-2 test (what is reported), or its validation split (what hyperparameters are tuned on).
EVAL_DATASETS = ("wikitext2", "wikitext2_validation")
OWL_WEIGHTINGS = ("blocks", "params")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")  # transformers' attention kernels available everywhere
DEFAULT_ZERO_SHOT_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

_NM_PATTERN = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class SparsityType:
    """``unstructured`` or ``N:M`` (prune N of every M consecutive weights of a row)."""

    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        return self.n / self.m if self.m else float("nan")

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.m else "unstructured"

    @classmethod
    def parse(cls, text: str) -> "SparsityType":
        if text == "unstructured":
            return cls()
        match = _NM_PATTERN.match(text.strip())
        if not match:
            raise OwlError(f"--sparsity_type {text!r} is not allowed; use 'unstructured' or N:M such as 2:4, 4:8")
        n, m = int(match.group(1)), int(match.group(2))
        if m < 2 or not 0 < n < m:
            raise OwlError(f"--sparsity_type {text!r} is malformed; N:M needs 0 < N < M and M >= 2 (e.g. 2:4, 4:8)")
        return cls(n, m)


@dataclass
class PruneSettings:
    """Everything one ``owl prune`` run needs. Defaults are the paper's where it has one."""

    model: str = "smollm2-135m"
    prune_method: str = "wanda_owl"
    sparsity_ratio: float = 0.7
    sparsity_type: str = "unstructured"
    Hyper_m: float = 5.0
    Lamda: float = 0.08
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    use_variant: bool = False
    cache_dir: str | None = None
    save: str | None = None
    save_model: str | None = None
    device: str | None = None
    dtype: str = "float32"
    eval_dtype: str | None = None  # None: evaluate in ``dtype``
    forward_dtype: str | None = None  # None: block forwards of calibration and pruning in ``dtype``
    eval_limit: int | None = None
    eval_dataset: str | None = "wikitext2"
    calib_dataset: str = "c4"
    calib_batch_size: int = 8
    eval_batch_size: int = 4
    attn_implementation: str | None = None  # None: the model's default (sdpa for the supported models)
    stats_path: str | None = None
    owl_weighting: str = "blocks"
    allocation: str | None = None  # None: from --prune_method (owl for *_owl, ...), else uniform
    dlp_alpha: float | None = None  # None: DLP's scripts' 0.15
    dlp_reduce: str = "mean"
    dsa_lambda: float | None = None  # None: DSA's --Lamda default 0.08
    epsilon: float | None = None  # None: AlphaPruning's LLaMA-7B script value for the method
    beta: float | None = None  # ATP has no default
    sparsegpt_blocksize: int = 128
    sparsegpt_percdamp: float = 0.01
    eval_zero_shot: bool = False
    tasks: tuple[str, ...] = field(default=DEFAULT_ZERO_SHOT_TASKS)
    zero_shot_limit: int | None = None
    zero_shot_batch_size: int = 8

    # ---- derived views -------------------------------------------------------------------
    @property
    def base_method(self) -> str | None:
        """magnitude, wanda or sparsegpt; None for dense."""
        return None if self.prune_method == "dense" else self.prune_method.split("_")[0]

    @property
    def allocation_name(self) -> str:
        """The allocator: --allocation, else the one --prune_method names (wanda_owl: owl), else uniform."""
        if self.allocation is not None:
            return self.allocation
        parts = self.prune_method.split("_")
        return parts[1] if len(parts) > 1 and parts[1] in ALLOCATIONS else "uniform"

    @property
    def uses_owl(self) -> bool:
        return self.allocation_name == "owl"

    @property
    def allocation_value(self) -> float | None:
        """The allocator's range hyperparameter as the run uses it (the official default where unset)."""
        from owl.allocators import get_allocator

        allocator = get_allocator(self.allocation_name)
        if allocator.hyperparameter is None:
            return None
        value = getattr(self, allocator.hyperparameter)
        return allocator.default_value(self.base_method) if value is None else value

    @property
    def allocation_params(self) -> dict:
        """What the allocation depends on besides the target: recorded in result.json."""
        name = self.allocation_name
        params = {"owl": {"Hyper_m": self.Hyper_m, "Lamda": self.Lamda, "owl_weighting": self.owl_weighting},
                  "dlp": {"dlp_alpha": self.allocation_value, "dlp_reduce": self.dlp_reduce},
                  "dsa": {"dsa_lambda": self.allocation_value},
                  "alphapruning": {"epsilon": self.allocation_value},
                  "atp": {"beta": self.allocation_value}}
        return params.get(name, {})

    @property
    def structure(self) -> SparsityType:
        return SparsityType.parse(self.sparsity_type)

    @property
    def is_dense(self) -> bool:
        return self.prune_method == "dense" or (self.sparsity_ratio == 0 and not self.structure.structured)

    @property
    def needs_calibration(self) -> bool:
        """Whether pruning itself needs activations (magnitude does not; OWL needs statistics)."""
        return not self.is_dense and self.base_method in ("wanda", "sparsegpt")

    @property
    def needs_statistics(self) -> bool:
        """Whether the allocator ranks the dense calibration statistics (OWL, DLP)."""
        from owl.allocators import get_allocator

        return not self.is_dense and get_allocator(self.allocation_name).statistic_source == "calibration"

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["tasks"] = list(self.tasks)
        return out

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> "PruneSettings":
        """Raise :class:`OwlError` on the first bad value; return self when all is well."""
        if self.prune_method not in PRUNE_METHODS:
            raise OwlError(f"--prune_method {self.prune_method!r} is not allowed; choose one of {', '.join(PRUNE_METHODS)}")
        structure = self.structure  # parses and validates --sparsity_type
        if not isinstance(self.sparsity_ratio, (int, float)) or not 0 <= self.sparsity_ratio < 1:
            raise OwlError(f"--sparsity_ratio {self.sparsity_ratio} is not allowed; it must lie in [0, 1)")
        if structure.structured and self.prune_method not in ("dense",):
            if abs(self.sparsity_ratio - structure.sparsity) > 1e-9 and self.sparsity_ratio != 0:
                raise OwlError(
                    f"--sparsity_ratio {self.sparsity_ratio} contradicts --sparsity_type {structure} "
                    f"(which prunes {structure.sparsity:g}); pass --sparsity_ratio {structure.sparsity:g}"
                )
        if self.prune_method == "wanda_owl_structure":
            if not structure.structured:
                raise OwlError("--prune_method wanda_owl_structure needs an N:M --sparsity_type such as 5:8")
            if float(self.Lamda) != int(self.Lamda) or self.Lamda < 0:
                raise OwlError(f"--Lamda {self.Lamda} is not allowed with wanda_owl_structure; it must be a whole number >= 0 (e.g. 2)")
        elif self.uses_owl and structure.structured:
            raise OwlError(
                f"--prune_method {self.prune_method} with --sparsity_type {structure} is not allowed; "
                "OWL with N:M is --prune_method wanda_owl_structure"
            )
        if self.allocation is not None:
            if self.allocation not in ALLOCATIONS:
                raise OwlError(f"--allocation {self.allocation!r} is not allowed; choose one of {', '.join(ALLOCATIONS)}")
            named = self.prune_method.split("_")[1] if "_" in self.prune_method else None
            if self.prune_method == "dense" or (named is not None and named != self.allocation):
                raise OwlError(
                    f"--allocation {self.allocation} contradicts --prune_method {self.prune_method}; "
                    f"pass --prune_method {self.base_method or 'wanda'} with --allocation {self.allocation}"
                )
        if structure.structured and self.allocation_name not in ("uniform", "owl"):
            raise OwlError(
                f"--allocation {self.allocation_name} with --sparsity_type {structure} is not allowed; its official code "
                "does not apply the allocation to N:M (use unstructured, or OWL's wanda_owl_structure)"
            )
        if self.dlp_reduce not in DLP_REDUCTIONS:
            raise OwlError(f"--dlp_reduce {self.dlp_reduce!r} is not allowed; choose one of {', '.join(DLP_REDUCTIONS)}")
        for name, low, high in (("dlp_alpha", 0, 0.5), ("dsa_lambda", 0, 0.5), ("epsilon", 0, 1), ("beta", 0, 1)):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and low <= value < high):
                raise OwlError(f"--{name} {value!r} is not allowed; it must lie in [{low}, {high})")
        if self.allocation_name == "atp" and self.beta is None and not self.is_dense:
            raise OwlError("--allocation atp needs --beta (ATP fixes none; its bound is min(2 s, 2 (1 - s)) / (blocks - 1))")
        if self.uses_owl:
            if not self.Hyper_m > 0:
                raise OwlError(f"--Hyper_m {self.Hyper_m} is not allowed; it must be > 0 (the paper uses 3, 5, 7, 10)")
            if not self.Lamda >= 0:
                raise OwlError(f"--Lamda {self.Lamda} is not allowed; it must be >= 0 (the paper uses 0.02 .. 0.2)")
        if self.use_variant and self.base_method != "wanda":
            raise OwlError(f"--use_variant applies to Wanda only, not to --prune_method {self.prune_method}")
        if self.use_variant and structure.structured:
            raise OwlError("--use_variant applies to unstructured sparsity only")
        for name in ("nsamples", "seqlen", "calib_batch_size", "eval_batch_size", "sparsegpt_blocksize", "zero_shot_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise OwlError(f"--{name} {value!r} is not allowed; it must be a whole number >= 1")
        if self.eval_limit is not None and (not isinstance(self.eval_limit, int) or self.eval_limit < 1):
            raise OwlError(f"--eval_limit {self.eval_limit!r} is not allowed; it must be a whole number >= 1")
        if self.zero_shot_limit is not None and (not isinstance(self.zero_shot_limit, int) or self.zero_shot_limit < 1):
            raise OwlError(f"--zero_shot_limit {self.zero_shot_limit!r} is not allowed; it must be a whole number >= 1")
        if not 0 <= self.sparsegpt_percdamp < 10:
            raise OwlError(f"--sparsegpt_percdamp {self.sparsegpt_percdamp} is not allowed; it must lie in [0, 10)")
        if self.dtype not in DTYPES:
            raise OwlError(f"--dtype {self.dtype!r} is not allowed; choose one of {', '.join(DTYPES)}")
        for name in ("eval_dtype", "forward_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPES:
                raise OwlError(f"--{name} {value!r} is not allowed; choose one of {', '.join(DTYPES)}")
        if self.calib_dataset not in CALIBRATION_DATASETS:
            raise OwlError(f"--calib_dataset {self.calib_dataset!r} is not allowed; choose one of {', '.join(CALIBRATION_DATASETS)}")
        if self.eval_dataset not in (None, *EVAL_DATASETS):
            raise OwlError(f"--eval_dataset {self.eval_dataset!r} is not allowed; choose one of {', '.join(EVAL_DATASETS)}")
        if self.owl_weighting not in OWL_WEIGHTINGS:
            raise OwlError(f"--owl_weighting {self.owl_weighting!r} is not allowed; choose one of {', '.join(OWL_WEIGHTINGS)}")
        if self.attn_implementation is not None and self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise OwlError(f"--attn_implementation {self.attn_implementation!r} is not allowed; choose one of {', '.join(ATTN_IMPLEMENTATIONS)}")
        if self.device is not None and not re.match(r"^(cpu|cuda(:\d+)?|mps)$", self.device):
            raise OwlError(f"--device {self.device!r} is not allowed; use cpu, cuda or cuda:N")
        return self
