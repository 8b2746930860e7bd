"""What the post-run commands (``meltquench dos``, ``meltquench adsorb``) work on.

A *target* is a run folder's final structure (``final.traj``) with the calculator settings of
its ``config.yaml``, or any structure file ASE reads (a crystal made by ``meltquench build``,
say) with the default settings; ``--preset`` and ``--set`` apply on top of either. Its results
go into an output folder of their own (``RUN_DIR/<command>/``, or ``<stem>_<command>/``
beside a structure file, or ``--out``), which is made and locked here and never replaced
without ``--overwrite``.
"""
from dataclasses import dataclass
from pathlib import Path

from .config import Config, load_config
from .errors import UserError
from .rundir import RunLock, collective
from .structures import read_structure

FINAL_NAME = "final.traj"


@dataclass
class Target:
    """A structure and the configuration its calculator comes from."""

    atoms: object  # ase.Atoms, with the run's region tags, planes and FixAtoms
    cfg: Config
    label: str  # what it is, for reports
    run_dir: Path = None  # the run folder, or None for a structure file
    path: Path = None  # the structure file read

    def calculator_settings(self):
        """(settings, which): the run's finish calculator where it has one (it made
        ``final.traj``), else the run's own calculator."""
        if self.cfg.finish.calculator is not None:
            return self.cfg.finish.calculator, "the run's finish calculator (finish.calculator)"
        return self.cfg.calculator, "the run's calculator (calculator)"

    def default_out(self, command):
        if self.run_dir is not None:
            return self.run_dir / command
        return self.path.with_name(f"{self.path.stem}_{command}")


def load_target(source, preset=None, overrides=(), finish_of=None):
    """The :class:`Target` of ``source``: a run folder (its ``final.traj`` and ``config.yaml``)
    or a structure file (the default configuration). ``preset``, the finish section of preset
    ``finish_of`` and ``overrides`` (``section.key=value``) apply on top. Bad input is a
    :class:`UserError`."""
    path = Path(source)
    if path.is_dir():
        final, config = path / FINAL_NAME, path / "config.yaml"
        for needed in (final, config):
            if not needed.is_file():
                raise UserError(f"{path} has no {needed.name}: give a finished run folder "
                                f"(with {FINAL_NAME} and config.yaml) or a structure file")
        if preset:
            raise UserError("--preset applies to a structure file; a run folder brings its own "
                            "config.yaml (change keys with --set)")
        cfg = load_config(config, overrides=overrides, finish_of=finish_of)
        return Target(read_structure(final), cfg, f"{final}", run_dir=path, path=final)
    if not path.exists():
        raise UserError(f"not found: {source} (give a run folder or a structure file)")
    cfg = load_config(preset=preset, overrides=overrides, finish_of=finish_of)
    return Target(read_structure(path), cfg, str(path), path=path)


def open_output(out, result_name, overwrite, comm, ours=()):
    """Make the output folder ``out`` and take its lock (collective); returns the held
    :class:`~meltquench.rundir.RunLock`.

    A folder that already holds ``result_name`` (a finished result) is refused unless
    ``overwrite``; then only the names in ``ours`` (glob patterns, what the command writes)
    are deleted, nothing else.
    """
    out = Path(out)

    def check():
        if out.exists() and not out.is_dir():
            raise UserError(f"output folder {out} exists and is not a folder")
        if (out / result_name).exists() and not overwrite:
            raise UserError(f"{out} already holds results ({result_name}): pass --overwrite to "
                            "replace them or --out DIR to write elsewhere")
        out.mkdir(parents=True, exist_ok=True)

    collective(comm, check)
    lock = RunLock(out, comm).acquire()
    if overwrite:
        def clear():
            for pattern in ours:
                for p in out.glob(pattern):
                    if p.is_file() and not p.is_symlink():
                        p.unlink()
        collective(comm, clear)
    return lock
