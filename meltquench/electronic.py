"""Electronic structure of a model: total DOS, DOS projected on its regions, band gap (GPAW).

``meltquench dos`` runs one GPAW SCF with the model's own calculator settings (D3 left out: it
changes no eigenvalue) at the electronic temperature of the programme's end
(``schedule.T_final_K``; with ``electronic_temperature: follow`` that is ``max(k_B T,
width_min)``, 0.05 eV by default), then, from the Kohn-Sham eigenvalues, occupation numbers and
k-point weights:

- the **total DOS** (states/eV per cell): every state broadened with a normalised Gaussian of
  standard deviation ``width`` (ASE's :class:`~ase.spectrum.dosdata.RawDOSData`), weighted by
  its k-point weight and the spin degeneracy (2 without spin polarisation);
- the **DOS projected on the regions** (crystal, melt, interface): in LCAO mode, Mulliken
  weights from GPAW's LCAO coefficients ``C_nM`` and overlap ``S_MM`` (which includes the PAW
  corrections): state n puts ``w_na = sum_{M on a} Re[conj(C_nM) (C S)_nM]`` on atom a, and
  ``sum_a w_na = 1``, so the crystal and melt PDOS (and the untagged atoms') add up to the
  total DOS exactly. The interface band overlaps both halves. In PW and FD mode there are no
  LCAO coefficients: only the total DOS and the gap (say ``mode: lcao`` for the PDOS);
- the **band gap**, three ways: from the occupations (HOMO: the highest state at least half
  occupied, LUMO: the lowest state less than half occupied; 0 where they overlap), from the
  eigenvalues around the Fermi level with :func:`ase.dft.bandgap.bandgap` (the cross-check;
  the two agree whenever E_F lies in a gap), and from the broadened total DOS: the width of the
  energy interval around E_F where the DOS stays below ``threshold`` states/eV per atom (what a
  gap read off a DOS plot such as the paper's Fig. 4e is; the broadening narrows it by a few
  widths, so it is at most the eigenvalue gap plus one grid step).

``meltquench dos-compare`` reads several such results (:func:`compare_dos`) and puts their
total DOS per atom and gaps side by side, each next to the paper's gap of the model it stands
for (the paper's Fig. 4e compares four models).

A PBE+U band gap of V2O3 depends on U, on the magnetic order (``calculator.spinpol`` and the
initial moments) and on the cell (its size, the k-points, the relaxation): the engine reports
what it finds next to the paper's numbers (:data:`PAPER_GAPS_EV`), and never tunes to them.
"""
import csv
import io
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from ase.dft.bandgap import bandgap
from ase.spectrum.dosdata import RawDOSData
from ase.units import Ha

from . import calculators
from .analysis.regions import atom_region_masks
from .calculators import CalculatorSettings, inner_calculators
from .errors import UserError
from .rundir import write_atomic

#: The paper's gaps from the total DOS (Fig. 4e), eV: targets to compare with, not truths.
PAPER_GAPS_EV = {"crystalline V2O3 (C-V2O3)": 0.49, "amorphous V2O3 (A-V2O3)": 0.16,
                 "A/C interface, perfect (A/C-V2O3@C-HCS)": 0.12,
                 "A/C interface, defective (A/C-V2O3-x@C-HMCS)": 0.06}
#: The paper's four models by the short names ``meltquench dos-compare --paper`` takes.
PAPER_MODELS = dict(zip(("crystal", "amorphous", "perfect", "defective"), PAPER_GAPS_EV))
GAP_CAVEAT = ("a PBE+U band gap of V2O3 depends on U, on the magnetic order (spin "
              "polarisation, initial moments) and on the cell (size, k-points, relaxation): "
              "compare with the paper's numbers, do not tune to them")
WIDTH_EV = 0.05  # Gaussian standard deviation of the broadening
THRESHOLD = 0.01  # states/eV per atom: the DOS counts as zero below this
WINDOW_EV = (-6.0, 4.0)  # plotted window around E_F
STEP_EV = 0.002  # energy grid spacing
STATES_NAME = "states.npz"
DOS_FILES = ("dos.json", "dos.csv", "dos.png", "*.tmp")
COMPARE_FILES = ("dos-compare.csv", "dos-compare.png", "*.tmp")


# --------------------------------------------------------------------------- arrays
def mulliken_atom_weights(C_nM, S_MM, atom_of_M, natoms):
    """Mulliken weights (nbands, natoms) of LCAO states: ``w_na = sum_{M on a}
    Re[conj(C_nM) (C S^T)_nM]``. Rows sum to the states' norms (1 for GPAW's states)."""
    C_nM = np.asarray(C_nM)
    W_nM = np.real(np.conj(C_nM) * (C_nM @ np.asarray(S_MM).T))
    return W_nM @ np.eye(natoms)[np.asarray(atom_of_M)]


def broadened_dos(energies_skn, weights_skn, grid, width):
    """sum over states of ``weight * Gaussian(E - e, sigma=width)`` on ``grid`` (eV):
    states/eV. ASE's RawDOSData does the broadening."""
    grid = np.asarray(grid, float)
    data = RawDOSData(np.ravel(energies_skn), np.ravel(weights_skn))
    return data.sample_grid(len(grid), grid[0], grid[-1], width=width).get_weights()


def occupation_gap(eig_skn, f_skn):
    """(gap, HOMO, LUMO) in eV: HOMO the highest state with occupation >= 1/2 (of a full
    state), LUMO the lowest below 1/2; the gap is 0 where they overlap (a metal)."""
    eig, occupied = np.asarray(eig_skn), np.asarray(f_skn) >= 0.5
    if occupied.all() or not occupied.any():
        raise UserError("the calculation has no empty (or no occupied) state: the gap needs "
                        "more bands (calculator.gpaw.extra: {nbands: ...})")
    homo, lumo = float(eig[occupied].max()), float(eig[~occupied].min())
    return max(0.0, lumo - homo), homo, lumo


def dos_gap(grid, dos, e_fermi, threshold):
    """(gap, lower edge, upper edge), eV: the interval around ``e_fermi`` where ``dos`` stays
    below ``threshold``, between the last grid point at or above it below E_F and the first
    above; (0, E_F, E_F) where the DOS at E_F is above it, NaN edges where the interval
    reaches the end of the grid."""
    grid, above = np.asarray(grid), np.asarray(dos) >= threshold
    i = int(np.clip(np.searchsorted(grid, e_fermi), 0, len(grid) - 1))
    if above[i]:
        return 0.0, float(e_fermi), float(e_fermi)
    lower, upper = np.flatnonzero(above[:i]), np.flatnonzero(above[i:])
    lo = float(grid[lower[-1]]) if len(lower) else np.nan
    hi = float(grid[i + upper[0]]) if len(upper) else np.nan
    return hi - lo, lo, hi


# --------------------------------------------------------------------------- GPAW
@dataclass
class States:
    """Kohn-Sham states of one calculation (eV): eigenvalues ``eig_skn``, occupations
    ``f_skn`` (0 to 1 per state), k-point weights ``weight_k`` (sum 1), the spin degeneracy,
    the Fermi level, the number of valence electrons and, in LCAO mode, the Mulliken weights
    ``w_skna`` (else None)."""

    eig_skn: np.ndarray
    f_skn: np.ndarray
    weight_k: np.ndarray
    degeneracy: float
    fermi_level: float
    nelectrons: float
    w_skna: np.ndarray = None
    fingerprint: str = ""

    def state_weights(self):
        """Weight of every state in the total DOS: k-point weight times spin degeneracy."""
        return np.broadcast_to(self.weight_k[None, :, None] * self.degeneracy,
                               self.eig_skn.shape)

    def save(self, path):
        arrays = {k: getattr(self, k) for k in ("eig_skn", "f_skn", "weight_k")}
        if self.w_skna is not None:
            arrays["w_skna"] = self.w_skna
        scalars = np.array([self.degeneracy, self.fermi_level, self.nelectrons])
        buffer = io.BytesIO()
        np.savez(buffer, scalars=scalars, fingerprint=np.array(self.fingerprint), **arrays)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path):
        """The states saved in ``path``, or None if it cannot be read (it is recomputed)."""
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
            degeneracy, fermi, nelectrons = (float(x) for x in data.pop("scalars"))
            return cls(data["eig_skn"], data["f_skn"], data["weight_k"], degeneracy, fermi,
                       nelectrons, data.get("w_skna"), str(data["fingerprint"][()]))
        except (OSError, ValueError, KeyError):
            return None


def gpaw_of(calc):
    """The GPAW calculator in ``calc`` (a sum with D3 included), else a UserError."""
    for c in inner_calculators(calc):
        if hasattr(c, "dft") and hasattr(c.dft, "ibzwfs"):
            return c
    raise UserError("the DOS needs GPAW's Kohn-Sham states: use a GPAW calculator "
                    "(--set calculator.name=gpaw)")


def states_from_gpaw(calc, natoms, comm):
    """:class:`States` of a converged GPAW 26 calculation (every rank gets them)."""
    calc = gpaw_of(calc)
    ibzwfs = calc.dft.ibzwfs
    eig_skn, f_skn = ibzwfs.get_all_eigs_and_occs(broadcast=True)
    weight_k = np.asarray(calc.get_k_point_weights(), float)
    w_skna = None
    if ibzwfs.mode == "lcao":
        atom_of_M = np.repeat(np.arange(natoms), [setup.nao for setup in calc.dft.setups])
        local = {}
        for wfs in ibzwfs:
            C = wfs.C_nM.gather()
            if C is not None and wfs.domain_comm.rank == 0:
                local[(wfs.spin, wfs.k)] = mulliken_atom_weights(C.data, wfs.S_MM.data,
                                                                 atom_of_M, natoms)
        found = {}
        for part in comm.allgather(local):
            found.update(part)
        w_skna = np.array([[found[(s, k)] for k in range(eig_skn.shape[1])]
                           for s in range(eig_skn.shape[0])])
        norms = w_skna.sum(axis=3)
        if not np.allclose(norms, 1.0, atol=1e-6):
            raise RuntimeError(f"Mulliken weights do not sum to 1 per state (off by up to "
                               f"{np.abs(norms - 1).max():.2e}): GPAW's LCAO layout is not the "
                               "one this code reads")
    return States(eig_skn * Ha, f_skn, weight_k, float(ibzwfs.spin_degeneracy),
                  float(calc.get_fermi_level()), float(calc.get_number_of_electrons()), w_skna)


def dos_settings(settings):
    """The calculator settings of the DOS: GPAW's, without D3 (no eigenvalue changes)."""
    s = CalculatorSettings.from_dict(settings)
    if s.name != "gpaw":
        raise UserError(f"meltquench dos needs GPAW's Kohn-Sham states; the calculator here is "
                        f"{s.name} (--set calculator.name=gpaw; a run made without a finish "
                        "calculator: --finish-of PRESET, e.g. ml-demo)")
    return replace(s, dispersion=None)


def fingerprint(atoms, settings, temperature_K):
    """A text naming what the states depend on: positions, cell, species, settings, T."""
    data = {"numbers": atoms.numbers.tolist(), "positions": np.round(atoms.positions, 8).tolist(),
            "cell": np.round(atoms.cell.array, 8).tolist(), "pbc": atoms.pbc.tolist(),
            "settings": settings.to_dict(), "T_K": float(temperature_K)}
    return json.dumps(data, sort_keys=True)


def compute_states(atoms, settings, directory, comm, temperature_K, cache=None):
    """One GPAW SCF on ``atoms`` (its GPAW text in ``directory/gpaw.txt``) and its
    :class:`States`; reuses ``cache`` (a states.npz) when it was made from the same atoms,
    settings and temperature, and writes it otherwise (rank 0)."""
    settings = dos_settings(settings)
    key = fingerprint(atoms, settings, temperature_K)
    if cache is not None and Path(cache).is_file():
        states = States.load(cache)
        if states is not None and states.fingerprint == key:
            return states, True
    atoms = calculators.prepare_atoms(settings, atoms.copy())
    atoms.calc = calculators.make_calculator(settings, directory=directory, comm=comm,
                                             natoms=len(atoms))
    calculators.set_electronic_temperature(atoms.calc, settings, temperature_K)
    atoms.get_potential_energy()
    states = states_from_gpaw(atoms.calc, len(atoms), comm)
    states.fingerprint = key
    if cache is not None and comm.Get_rank() == 0:
        states.save(cache)
    return states, False


# --------------------------------------------------------------------------- the DOS
@dataclass
class DOSResult:
    """The DOS on an energy grid relative to E_F, per region, and the gaps with their
    method."""

    energy: np.ndarray  # eV, relative to the Fermi level
    total: np.ndarray  # states/eV per cell
    regions: dict  # name -> PDOS (states/eV), the Mulliken projection on its atoms
    gap: dict  # the gaps (eV) and how they were found
    meta: dict = field(default_factory=dict)
    spins: dict = field(default_factory=dict)  # spin-polarised: "up"/"down" -> DOS (states/eV)

    def lines(self):
        g, m = self.gap, self.meta
        out = [f"DOS of {m['source']} ({m['natoms']} atoms, {m['calculator']}):",
               f"  Fermi level {g['fermi_level_eV']:.4f} eV; {g['nelectrons']:g} valence "
               f"electrons, {g['electrons_below_fermi']:.3f} below E_F in the broadened DOS",
               f"  gap from the occupations (HOMO {g['homo_eV']:+.4f}, LUMO {g['lumo_eV']:+.4f} "
               f"eV from E_F): {g['occupation_gap_eV']:.4f} eV",
               f"  gap from ase.dft.bandgap (eigenvalues around E_F): "
               f"{g['ase_bandgap_eV']:.4f} eV",
               f"  gap from the total DOS (Gaussian sigma {g['width_eV']:g} eV, below "
               f"{g['threshold_per_atom']:g} states/eV per atom, grid {g['step_eV']:g} eV): "
               f"{g['dos_gap_eV']:.4f} eV"]
        if self.spins:
            out.append(f"  spin-polarised: magnetic moment {m['magnetic_moment_muB']:+.3f} "
                       f"Bohr magnetons per cell (occupied up minus down states); gaps per "
                       f"spin from the occupations: up {g['occupation_gap_up_eV']:.4f} eV, "
                       f"down {g['occupation_gap_down_eV']:.4f} eV")
        if self.regions:
            out.append("  projected on: " + ", ".join(
                f"{name} ({m['region_atoms'][name]} atoms)" for name in self.regions))
        else:
            out.append(f"  no region PDOS: {m['pdos_note']}")
        out.append("  the paper's gaps (Fig. 4e): " + ", ".join(
            f"{k} {v:g} eV" for k, v in PAPER_GAPS_EV.items()))
        out.append(f"  NB: {GAP_CAVEAT}")
        return out

    def to_dict(self):
        return {"gap": self.gap, "meta": self.meta, "paper_gaps_eV": PAPER_GAPS_EV,
                "caveat": GAP_CAVEAT, "units": {"energy": "eV relative to the Fermi level",
                                                "dos": "states/eV per cell"}}

    def write(self, out):
        """``dos.json`` (gaps, method, settings), ``dos.csv`` (E - E_F, total, regions) and
        ``dos.png`` in the folder ``out`` (rank 0)."""
        out = Path(out)
        write_atomic(out / "dos.json", (json.dumps(self.to_dict(), indent=1) + "\n").encode())
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["energy_minus_fermi_eV", "total_states_per_eV",
                         *(f"{name}_states_per_eV" for name in self.regions),
                         *(f"total_spin_{name}_states_per_eV" for name in self.spins)])
        for row in zip(self.energy, self.total, *self.regions.values(), *self.spins.values()):
            writer.writerow([f"{x:.6g}" for x in row])
        write_atomic(out / "dos.csv", text.getvalue().encode())
        self.plot(out / "dos.png")

    def plot(self, path):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        fig = Figure(figsize=(6.4, 4.0), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.fill_between(self.energy, self.total, color="0.85", label="total")
        ax.plot(self.energy, self.total, color="k", lw=1.0)
        for k, (name, pdos) in enumerate(self.regions.items()):
            ax.plot(self.energy, pdos, lw=1.1, color=f"C{k}", label=name)
        for name, dos, style in zip(self.spins, self.spins.values(), (":", "-.")):
            ax.plot(self.energy, dos, lw=1.0, color="0.35", ls=style, label=f"total, spin {name}")
        ax.axvline(0.0, color="0.3", ls="--", lw=0.8)
        g = self.gap
        if g["dos_gap_eV"] > 0 and np.isfinite(g["dos_gap_eV"]):
            ax.axvspan(g["dos_gap_lower_eV"], g["dos_gap_upper_eV"], color="C3", alpha=0.15)
        ax.set_xlabel("E - E_F (eV)")
        ax.set_ylabel("DOS (states/eV per cell)")
        ax.set_xlim(self.energy[0], self.energy[-1])
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"{Path(self.meta['source']).name}: gap {g['occupation_gap_eV']:.3f} eV "
                     f"(states), {g['dos_gap_eV']:.3f} eV (DOS, sigma {g['width_eV']:g} eV)",
                     fontsize=9)
        fig.savefig(path, dpi=130)


def check_dos_options(width, window, threshold):
    """A UserError for a broadening, window or threshold the DOS cannot use."""
    if not width > 0:
        raise UserError(f"--width must be a positive broadening (eV), got {width!r}")
    if not window[1] > window[0]:
        raise UserError(f"--window must be EMIN EMAX with EMIN < EMAX (eV), got {window!r}")
    if not threshold > 0:
        raise UserError(f"--threshold must be positive (states/eV per atom), got {threshold!r}")


def dos_from_states(states, atoms, width=WIDTH_EV, window=WINDOW_EV, step=STEP_EV,
                    threshold=THRESHOLD, interface_width=3.0, source="Atoms", calculator=""):
    """The :class:`DOSResult` of ``states`` for ``atoms`` (their regions), energies relative
    to E_F; ``source`` and ``calculator`` name them in the report."""
    check_dos_options(width, window, threshold)
    eig = states.eig_skn - states.fermi_level
    weights = states.state_weights()
    energy = np.arange(window[0], window[1] + step / 2, step)
    total = broadened_dos(eig, weights, energy, width)
    regions, note, counts = {}, "", {}
    if states.w_skna is None:
        note = "no LCAO coefficients (PW or FD mode): use calculator.gpaw.mode lcao"
    else:
        for name, mask in atom_region_masks(atoms, interface_width).items():
            counts[name] = int(mask.sum())
            regions[name] = broadened_dos(eig, weights * states.w_skna[..., mask].sum(axis=3),
                                          energy, width)
        if not regions:
            note = "the structure has no crystal/melt tags"
    occ_gap, homo, lumo = occupation_gap(eig, states.f_skn)
    try:
        ase_gap = float(bandgap(eigenvalues=eig, efermi=0.0)[0])
    except ValueError:  # too few bands: no empty one
        ase_gap = float("nan")
    cut = threshold * len(atoms)
    d_gap, lo, hi = dos_gap(energy, total, 0.0, cut)
    spins, spin_gaps, moment = {}, {}, None
    if eig.shape[0] == 2:  # spin-polarised: GPAW's spin index 0 is up, 1 down
        for s, name in enumerate(("up", "down")):
            spins[name] = broadened_dos(eig[s:s + 1], weights[s:s + 1], energy, width)
            spin_gaps[f"occupation_gap_{name}_eV"] = occupation_gap(eig[s:s + 1],
                                                                    states.f_skn[s:s + 1])[0]
        per_spin = (states.f_skn * states.weight_k[None, :, None]).sum(axis=(1, 2))
        moment = float(per_spin[0] - per_spin[1])
    below = np.arange(eig.min() - 8 * width, 0.0 + step / 2, step)
    n_below = float(np.trapezoid(broadened_dos(eig, weights, below, width), below))
    gap = {"occupation_gap_eV": occ_gap, "homo_eV": homo, "lumo_eV": lumo,
           "ase_bandgap_eV": ase_gap, "dos_gap_eV": d_gap, "dos_gap_lower_eV": lo,
           "dos_gap_upper_eV": hi, "fermi_level_eV": states.fermi_level,
           "nelectrons": states.nelectrons, "electrons_below_fermi": n_below,
           "width_eV": width, "threshold_per_atom": threshold,
           "threshold_states_per_eV": cut, "step_eV": step, **spin_gaps,
           "method": "occupation gap: HOMO = highest state with occupation >= 1/2, LUMO = "
                     "lowest below 1/2 (0 if they overlap); ase_bandgap: ase.dft.bandgap on "
                     "the eigenvalues with E_F from GPAW; dos gap: interval around E_F where the "
                     "Gaussian-broadened total DOS (sigma width_eV) is below "
                     "threshold_per_atom x atoms states/eV, edges on the grid (step_eV)"}
    meta = {"source": str(source), "calculator": calculator, "natoms": len(atoms), "formula": atoms.get_chemical_formula(),
            "region_atoms": counts, "pdos_note": note, "spin_polarised": bool(spins),
            "magnetic_moment_muB": moment,
            "pdos_method": "Mulliken weights from GPAW's LCAO coefficients and overlap"
                           if states.w_skna is not None else None}
    return DOSResult(energy, total, regions, gap, meta, spins)


# --------------------------------------------------------------------------- several models
@dataclass
class SavedDOS:
    """The total DOS and gaps of one ``meltquench dos`` result folder, as it wrote them."""

    label: str
    folder: Path
    energy: np.ndarray  # eV, relative to the Fermi level
    total: np.ndarray  # states/eV per cell
    gap: dict
    meta: dict

    @classmethod
    def read(cls, path, label=None):
        """The result in ``path``: a ``meltquench dos`` output folder (dos.json, dos.csv) or a
        folder holding one as ``dos/`` (a run folder). ``label`` defaults to the run folder's
        name (the structure file's stem for ``<stem>_dos``)."""
        path = Path(path)
        folder = path / "dos" if (path / "dos" / "dos.json").is_file() else path
        if not (folder / "dos.json").is_file() or not (folder / "dos.csv").is_file():
            raise UserError(f"{path} holds no 'meltquench dos' result (dos.json and dos.csv, "
                            "or a dos/ folder with them): run 'meltquench dos' on it first")
        try:
            data = json.loads((folder / "dos.json").read_text())
            gap, meta = data["gap"], data["meta"]
            table = np.loadtxt(folder / "dos.csv", delimiter=",", skiprows=1, usecols=(0, 1),
                               ndmin=2)
            natoms = int(meta["natoms"])
            missing = [k for k in ("occupation_gap_eV", "dos_gap_eV", "dos_gap_lower_eV",
                                   "dos_gap_upper_eV") if k not in gap]
            if missing:
                raise KeyError(", ".join(missing))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{folder}: not a readable 'meltquench dos' result "
                            f"({exc.__class__.__name__}: {exc})") from None
        if table.shape[0] < 2 or natoms < 1:
            raise UserError(f"{folder}: its dos.csv holds no DOS")
        if label is None:
            label = (folder.parent.name if folder.name == "dos"
                     else folder.name.removesuffix("_dos"))
        return cls(label, folder, table[:, 0], table[:, 1], gap, meta)

    @property
    def per_atom(self):
        """The total DOS in states/eV per atom (models of different sizes compare)."""
        return self.total / int(self.meta["natoms"])


@dataclass
class DOSComparison:
    """The total DOS and gaps of several models side by side, each next to the paper's gap
    of the model it stands for (``paper``: a :data:`PAPER_MODELS` name or None per model)."""

    models: list
    paper: list

    def rows(self):
        rows = []
        for model, key in zip(self.models, self.paper):
            g, m = model.gap, model.meta
            rows.append({
                "model": model.label, "folder": str(model.folder), "formula": m.get("formula", ""),
                "atoms": int(m["natoms"]), "magnetic_moment_muB": m.get("magnetic_moment_muB"),
                "occupation_gap_eV": g["occupation_gap_eV"], "dos_gap_eV": g["dos_gap_eV"],
                "width_eV": g.get("width_eV"), "threshold_per_atom": g.get("threshold_per_atom"),
                "paper_model": PAPER_MODELS[key] if key else "",
                "paper_gap_eV": PAPER_GAPS_EV[PAPER_MODELS[key]] if key else None})
        return rows

    def lines(self):
        def number(x, fmt):
            return "-" if x is None or not np.isfinite(x) else format(x, fmt)
        rows = self.rows()
        width = max(len("model"), *(len(r["model"]) for r in rows))
        out = [f"{'model':<{width}}  {'formula':<10} {'moment μB':>9}  {'gap (states) eV':>15}  "
               f"{'gap (DOS) eV':>12}  {'paper eV':>8}"]
        for r in rows:
            out.append(f"{r['model']:<{width}}  {r['formula']:<10} "
                       f"{number(r['magnetic_moment_muB'], '+.2f'):>9}  "
                       f"{number(r['occupation_gap_eV'], '.3f'):>15}  "
                       f"{number(r['dos_gap_eV'], '.3f'):>12}  "
                       f"{number(r['paper_gap_eV'], '.2f'):>8}")
        out.append("gap (states): from the occupations; gap (DOS): where the broadened total DOS "
                   "is below the threshold (see each folder's dos.json for its method)")
        out.append(f"NB: {GAP_CAVEAT}")
        return out

    def write(self, out):
        """``dos-compare.csv`` (one row per model) and ``dos-compare.png`` in ``out``."""
        out = Path(out)
        rows = self.rows()
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(out / "dos-compare.csv", text.getvalue().encode())
        self.plot(out / "dos-compare.png")

    def plot(self, path):
        """One panel per model, top to bottom: the total DOS per atom against E - E_F, the
        DOS gap shaded, the gaps and the paper's written in the panel (as the paper's Fig. 4e
        stacks its four models)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        n = len(self.models)
        fig = Figure(figsize=(6.4, 1.2 + 1.5 * n), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
        lo = max(model.energy[0] for model in self.models)
        hi = min(model.energy[-1] for model in self.models)
        for k, (ax, model, row) in enumerate(zip(axes, self.models, self.rows())):
            ax.fill_between(model.energy, model.per_atom, color=f"C{k}", alpha=0.35, lw=0)
            ax.plot(model.energy, model.per_atom, color=f"C{k}", lw=1.0)
            ax.axvline(0.0, color="0.3", ls="--", lw=0.8)
            g = model.gap
            if g["dos_gap_eV"] > 0 and np.isfinite(g["dos_gap_eV"]):
                ax.axvspan(g["dos_gap_lower_eV"], g["dos_gap_upper_eV"], color="0.3", alpha=0.15)
            text = (f"{model.label} ({row['formula']}): gap {g['occupation_gap_eV']:.3f} eV "
                    f"(states), {g['dos_gap_eV']:.3f} eV (DOS)")
            if row["paper_gap_eV"] is not None:
                text += f"; paper {row['paper_gap_eV']:g} eV"
            ax.text(0.01, 0.95, text, transform=ax.transAxes, va="top", fontsize=8)
            ax.set_ylim(bottom=0, top=1.35 * model.per_atom[(model.energy >= lo)
                                                           & (model.energy <= hi)].max())
            ax.set_ylabel("states/eV/atom", fontsize=8)
        axes[-1].set_xlim(lo, hi)
        axes[-1].set_xlabel("E - E_F (eV)")
        fig.savefig(path, dpi=130)


def compare_dos(folders, labels=None, paper=None):
    """The :class:`DOSComparison` of the ``meltquench dos`` results in ``folders``;
    ``labels`` (one per folder) name them, ``paper`` (one per folder: a
    :data:`PAPER_MODELS` name, or '-' / None for none) says which of the paper's models
    each stands for."""
    folders = list(folders)
    if not folders:
        raise UserError("give at least one 'meltquench dos' result folder")
    for name, given in (("--labels", labels), ("--paper", paper)):
        if given is not None and len(given) != len(folders):
            raise UserError(f"{name} needs one value per folder: {len(folders)} folders, "
                            f"{len(given)} values")
    paper = [None if key in (None, "-") else key for key in (paper or [None] * len(folders))]
    for key in paper:
        if key is not None and key not in PAPER_MODELS:
            raise UserError(f"--paper: unknown model {key!r}; choose from "
                            f"{', '.join(PAPER_MODELS)} or - for none")
    models = [SavedDOS.read(path, label)
              for path, label in zip(folders, labels or [None] * len(folders))]
    return DOSComparison(models, paper)
