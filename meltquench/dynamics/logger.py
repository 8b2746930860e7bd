"""The MD log of an NVT run: ASE's ``MDLogger`` plus the target and the conserved quantity."""
from ase import units
from ase.md.logger import MDLogger


class ThermostatLogger(MDLogger):
    """ASE's MD log plus the columns an NVT run needs.

    Columns: time (ps), E_tot, E_pot, E_kin (eV, all atoms), T of the mobile atoms (K, over
    ``dyn.ndof``), target T (K) and the conserved quantity (eV).
    """

    def __init__(self, dyn, atoms, logfile, mode="a", comm=None):
        kwargs = {} if comm is None else {"comm": comm}
        super().__init__(dyn, atoms, logfile, header=False, mode=mode, **kwargs)
        self.hdr = "%-9s %12s %12s %12s %9s %9s %14s" % (
            "Time[ps]", "Etot[eV]", "Epot[eV]", "Ekin[eV]", "T[K]", "Ttgt[K]", "Econs[eV]")
        self.fmt = "%-10.4f %12.5f %12.5f %12.5f %9.2f %9.2f %14.6f\n"
        self.logfile.write(self.hdr + "\n")

    def __call__(self):
        dyn = self.dyn
        epot = dyn.get_free_energy()
        ekin = dyn.get_kinetic_energy()
        self.logfile.write(self.fmt % (
            dyn.get_time() / (1000 * units.fs), epot + ekin, epot, ekin,
            dyn.get_kinetic_temperature(), dyn.temperature_K, dyn.get_conserved_energy()))
        self.logfile.flush()
