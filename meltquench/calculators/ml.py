"""Machine-learned universal potentials: CHGNet and SevenNet, loaded offline and safely.

Both were trained on the Materials Project trajectories (MPtrj): PBE and PBE+U energies and
forces with U(V) = 3.25 eV on the V 3d states, the paper's own level of theory less its D3
dispersion (so ``calculator.dispersion: auto`` adds D3(BJ) on top, as for GPAW). They cost about
a second per MD step at 120 atoms on one or two cores, against half an hour for GPAW: the tier
for melting and quenching on a workstation (see ``benchmarks/README.md`` for their force errors
against GPAW on V2O3 frames).

=========  ======================================  ========================================
engine     shipped models (``calculator.ml.model``)  package (the ``ml`` extra)
=========  ======================================  ========================================
chgnet     ``0.3.0`` (default), ``0.2.0``,           ``chgnet`` 0.4 (Deng et al., Nat. Mach.
           ``r2scan`` (r2SCAN, not PBE+U)            Intell. 5, 1031 (2023))
sevennet   ``7net-0`` (default, 11 Jul 2024),        ``sevenn`` 0.13 (Park et al., J. Chem.
           ``7net-0_22may2024``, ``7net-l3i5``,      Theory Comput. 20, 4857 (2024))
           ``7net-mf-0`` (with ``ml.modal``)
=========  ======================================  ========================================

``calculator.ml.model`` may also be the path to a checkpoint of one's own (a fine-tuned model).
Every checkpoint, shipped or not, is read with ``torch.load(weights_only=True)``: tensors,
numbers, strings and numpy arrays only, never code (both packages' own loaders unpickle
anything, which a file a user may have received must not be given). A checkpoint that needs
more is refused with one line.

Under MPI the model runs on rank 0 of the calculator's communicator and the results are
broadcast, so every rank integrates the same forces bit for bit (torch's threaded reductions
need not agree between processes); with replicas each replica group has its own model on its
own rank 0, so give ML runs one rank per replica. The other ranks wait for rank 0 asleep
(:func:`~meltquench.kernels.parallel.wait_for_root`), not spinning in MPI, and rank 0 takes
their cores as torch threads: ``calculator.ml.threads`` if given, else ``OMP_NUM_THREADS``
(else 1) times the ranks of the communicator on rank 0's node, at most the node's cores. So
``mpirun -np 2`` on a 2-core machine runs the model on 2 threads, and the GPAW finish that
follows on 2 ranks.
"""
import contextlib
import io
import os
import pickle
import warnings
from unittest import mock
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from ..errors import UserError
from ..kernels.parallel import get_comm, node_size, wait_for_root
from .base import Settings, setting, suggest

#: The machine-learned engines ``calculator.name`` may be.
ML_ENGINES = ("chgnet", "sevennet")

#: The Python package each engine needs, all in the ``ml`` extra.
PACKAGES = {"chgnet": "chgnet", "sevennet": "sevenn"}

#: Shipped CHGNet checkpoints, relative to the chgnet package (as ``CHGNet.load`` has them).
CHGNET_MODELS = {
    "0.3.0": "pretrained/0.3.0/chgnet_0.3.0_e29f68s314m37.pth.tar",
    "0.2.0": "pretrained/0.2.0/chgnet_0.2.0_e30f77s348m32.pth.tar",
    "r2scan": "pretrained/r2scan/chgnet_r2scan_transfer_learning_e15f36s161m23.pth.tar",
}
#: Shipped SevenNet checkpoints, relative to the sevenn package.
SEVENNET_MODELS = {
    "7net-0": "pretrained_potentials/SevenNet_0__11Jul2024/checkpoint_sevennet_0.pth",
    "7net-0_22may2024": "pretrained_potentials/SevenNet_0__22May2024/checkpoint_sevennet_0.pth",
    "7net-l3i5": "pretrained_potentials/SevenNet_l3i5/checkpoint_l3i5.pth",
    "7net-mf-0": "pretrained_potentials/SevenNet_MF_0/checkpoint_sevennet_mf_0.pth",
}
SHIPPED = {"chgnet": CHGNET_MODELS, "sevennet": SEVENNET_MODELS}
DEFAULT_MODEL = {"chgnet": "0.3.0", "sevennet": "7net-0"}


@dataclass
class MLSettings(Settings):
    """``calculator.ml``: which model a machine-learned engine loads, and how it runs."""

    section = "calculator.ml"

    model: Optional[str] = setting(
        None, "shipped model name (chgnet: 0.3.0 (default), 0.2.0, r2scan; sevennet: 7net-0 "
        "(default), 7net-0_22may2024, 7net-l3i5, 7net-mf-0) or the path to a checkpoint of "
        "one's own, read as weights only (never unpickled code)")
    modal: Optional[str] = setting(
        None, "fidelity of a multi-fidelity SevenNet model (7net-mf-0: e.g. PBE)")
    threads: Optional[int] = setting(
        None, "torch threads of the rank that runs the model; null: OMP_NUM_THREADS (else 1) "
        "times the ranks on its node, which wait asleep meanwhile (at most the node's cores)")

    def __post_init__(self):
        super().__post_init__()
        if self.threads is not None and self.threads < 1:
            raise UserError(f"calculator.ml.threads must be at least 1, got {self.threads}")

    def model_for(self, engine):
        """The model name or path ``engine`` loads (its default where none is given)."""
        return self.model or DEFAULT_MODEL[engine]

    def thread_count(self, node_ranks=1):
        """Torch threads: ``threads``, else ``OMP_NUM_THREADS`` (else 1) times ``node_ranks``
        (the ranks whose cores the model's rank may use), at most ``os.cpu_count()``."""
        if self.threads is not None:
            return self.threads
        try:
            per_rank = max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
        except ValueError:
            per_rank = 1
        if node_ranks <= 1:
            return per_rank
        return max(1, min(per_rank * int(node_ranks), os.cpu_count() or 1))

    def describe(self, engine):
        model = self.model_for(engine)
        shown = model if model in SHIPPED[engine] else f"checkpoint {model}"
        label = {"chgnet": "CHGNet", "sevennet": "SevenNet"}[engine]
        return f"{label} {shown}" + (f" ({self.modal})" if self.modal else "")


def import_engine(engine):
    """Import the package of ``engine`` (and torch), or stop with one line naming the extra."""
    package = PACKAGES[engine]
    try:
        import torch  # noqa: F401
        module = __import__(package)
    except ImportError as err:
        raise UserError(f"calculator.name {engine} needs the {package} package (and torch), "
                        f"which are not installed ({err.name or package} is missing): "
                        f"pip install 'meltquench[ml]'") from None
    return module


def checkpoint_path(engine, model):
    """The file of shipped model name or checkpoint path ``model`` for ``engine``."""
    if model in SHIPPED[engine]:
        package = import_engine(engine)
        return Path(package.__file__).parent / SHIPPED[engine][model]
    path = Path(model).expanduser()
    if not path.is_file():
        names = SHIPPED[engine]
        raise UserError(f"calculator.ml.model {model!r} is neither a shipped {engine} model "
                        f"({', '.join(names)}){suggest(model, names)} nor a checkpoint file")
    return path


#: Globals a weights-only load may meet besides torch's own: numpy arrays in a SevenNet
#: checkpoint's config (data, not code).
def _numpy_globals():
    _reconstruct = np._core.multiarray._reconstruct
    return [(_reconstruct, "numpy.core.multiarray._reconstruct"), _reconstruct, np.ndarray,
            np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType, np.dtypes.Int64DType,
            np.dtypes.Int32DType, np.dtypes.BoolDType]


def load_weights(path):
    """The contents of torch checkpoint ``path``, read with ``weights_only=True``.

    Tensors, containers, numbers, strings and numpy arrays are read; anything else (a class or
    function the file would have Python import and call) is refused with :class:`UserError`.
    """
    import torch
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        reason = str(err).strip().splitlines()
        detail = next((line.strip() for line in reason if "Unsupported global" in line),
                      reason[0] if reason else type(err).__name__)
        raise UserError(f"{path}: not a weights-only torch checkpoint meltquench can read "
                        f"({detail[:160]}); it never unpickles code from a file") from None


def make_chgnet_model(model):
    """A CHGNet model (CPU, eval mode) from a shipped name or a checkpoint path."""
    import_engine("chgnet")
    from chgnet.model import CHGNet
    path = checkpoint_path("chgnet", model)
    state = load_weights(path)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{path}: not a CHGNet checkpoint (no 'model' entry)")
    kwargs = {}
    if model in CHGNET_MODELS:  # as CHGNet.load builds its own (a saved model has its args)
        kwargs = {"mlp_out_bias": model == "0.2.0", "version": model}
    try:
        net = CHGNet.from_dict(state["model"], **kwargs)
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserError(f"{path}: not a CHGNet checkpoint this chgnet can build "
                        f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    return net.to("cpu").eval()


def make_sevennet_calculator(model, modal=None):
    """sevenn's ``SevenNetCalculator`` on the CPU, its checkpoint read as weights only."""
    import_engine("sevennet")
    import sevenn.checkpoint
    from sevenn.calculator import SevenNetCalculator
    path = checkpoint_path("sevennet", model)

    def weights_only_load(file, weights_only=None, map_location=None):
        return load_weights(file)

    # sevenn reads every checkpoint through sevenn.checkpoint.torch_load(weights_only=False);
    # for this call it reads weights only.
    with mock.patch.object(sevenn.checkpoint, "torch_load", weights_only_load):
        try:
            return SevenNetCalculator(model=str(path), device="cpu", modal=modal)
        except (KeyError, ValueError) as err:
            raise UserError(f"calculator.ml: SevenNet model {model!r} cannot be used: "
                            f"{str(err).splitlines()[0][:160]}") from None


class MLCalculator(Calculator):
    """Energy and forces of a machine-learned potential as an ASE calculator.

    engine: 'chgnet' or 'sevennet'; settings: :class:`MLSettings` or a dict. ``comm``
    (mpi4py communicator; None: COMM_WORLD, or serial without mpi4py): the model runs on its
    rank 0 and the results are broadcast, an error on rank 0 is raised on every rank.
    The energy is conservative (the forces are its exact negative gradient), so
    ``free_energy`` equals ``energy``. Results in eV, eV/Å and eV/Å³ (stress, Voigt order).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, engine, settings=None, comm=None, **kwargs):
        super().__init__(**kwargs)
        if engine not in ML_ENGINES:
            raise UserError(f"unknown machine-learned engine {engine!r}: one of "
                            f"{', '.join(ML_ENGINES)}")
        self.engine = engine
        self.settings = MLSettings.from_dict(settings)
        self.comm = get_comm(comm)
        self.model_name = self.settings.model_for(engine)
        self._inner = None
        node_ranks = node_size(self.comm) if self.settings.threads is None else 1
        if self._is_root():
            import_engine(engine)
            import torch
            torch.set_num_threads(self.settings.thread_count(node_ranks))
            self._inner = self._build()

    def _is_root(self):
        return self.comm.Get_rank() == 0

    def _build(self):
        with contextlib.redirect_stdout(io.StringIO()):  # "CHGNet will run on cpu"
            if self.engine == "chgnet":
                from chgnet.model.dynamics import CHGNetCalculator
                return CHGNetCalculator(model=make_chgnet_model(self.model_name),
                                        use_device="cpu", on_isolated_atoms="error")
            return make_sevennet_calculator(self.model_name, self.settings.modal)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        results = None
        if self._is_root():
            try:
                results = self._predict("stress" in properties)
            except Exception as err:  # every rank raises it, none waits in bcast
                results = err
        if self.comm.Get_size() > 1:
            wait_for_root(self.comm)  # asleep: rank 0's threads have the cores
            results = self.comm.bcast(results, root=0)
        if isinstance(results, Exception):
            raise results
        results["free_energy"] = results["energy"]
        self.results.update(results)

    def _predict(self, stress):
        """Energy, forces (and stress) of ``self.atoms`` from the model (rank 0)."""
        wanted = ["energy", "forces"] + (["stress"] if stress else [])
        if self.engine == "chgnet":  # its default task adds stress and magnetic moments
            with warnings.catch_warnings():  # chgnet 0.4's own volume tensor, every call
                warnings.filterwarnings("ignore", "Converting a tensor with requires_grad")
                self._inner.calculate(self.atoms, wanted, all_changes,
                                      task="efs" if stress else "ef")
        else:
            self._inner.calculate(self.atoms, wanted, all_changes)
        inner = self._inner.results
        results = {"energy": float(inner["energy"]),
                   "forces": np.array(inner["forces"], dtype=float).reshape(-1, 3)}
        if "stress" in inner:
            results["stress"] = np.array(inner["stress"], dtype=float)
        return results


def make_ml(engine, settings, comm=None):
    """The :class:`MLCalculator` of ``engine`` for :class:`MLSettings` (or a dict)."""
    return MLCalculator(engine, settings, comm=comm)
