"""Several independent melt-quench runs in one MPI job, and their summary.

``replicas.count = n`` splits the MPI world into ``min(n, ranks)`` groups of contiguous ranks;
each group drives its own calculator on its own communicator and runs its replicas one after
the other, each in ``<run_dir>/replica-<i>`` with the configuration of
:func:`~meltquench.config.replica_config` (its own seeds, or the ``replicas.vary`` values).
Rank 0 of the world then reads every replica's ``analysis/summary.json`` and writes
``replicas-summary.json`` and ``.csv``: per pair and region, the mean coordination number and
first-peak position as mean and standard deviation over the replicas.
"""
import csv
import json
import math
from pathlib import Path

import numpy as np

from . import calculators
from .config import config_from_dict, read_yaml, replica_config
from .driver import restart, run
from .errors import UserError
from .kernels.parallel import get_comm
from .checkpoint import CHECKPOINT_NAME, read_checkpoint
from .rundir import RunLock, prepare_run_dir


def replica_groups(n_replicas, size):
    """Group (color) of every rank and the replicas each group runs, in order."""
    n_groups = min(n_replicas, size)
    colors = [rank * n_groups // size for rank in range(size)]
    return colors, [list(range(g, n_replicas, n_groups)) for g in range(n_groups)]


def replica_dir(run_dir, index):
    return Path(run_dir) / f"replica-{index}"


def _split(comm, n_replicas):
    comm = get_comm(comm)
    colors, work = replica_groups(n_replicas, comm.Get_size())
    color = colors[comm.Get_rank()]
    sub = comm.Split(color, comm.Get_rank()) if comm.Get_size() > 1 else comm
    return comm, sub, work[color]


def run_replicas(cfg, run_dir, comm=None, overwrite=False, stop_after_s=None, stream=None,
                 calculator_factory=None):
    """Run ``cfg.replicas.count`` replicas into ``run_dir/replica-<i>``; returns the summary."""
    comm, sub, mine = _split(comm, cfg.replicas.count)
    if calculator_factory is None:  # before the folder is made: what to install, if anything
        for index in range(cfg.replicas.count):
            rcfg = replica_config(cfg, index)
            for settings in (rcfg.calculator, rcfg.finish.calculator):
                if settings is not None:
                    calculators.check_available(settings)
    with prepare_run_dir(run_dir, overwrite, comm):
        if comm.Get_rank() == 0:
            (Path(run_dir) / "replicas.yaml").write_text(cfg.to_yaml())
        for index in mine:
            rcfg = replica_config(cfg, index)
            calc = calculator_factory(index) if calculator_factory else None
            run(rcfg, run_dir=replica_dir(run_dir, index), comm=sub, overwrite=True,
                stop_after_s=stop_after_s, stream=stream, calculator=calc)
        comm.Barrier()
        return summarise(run_dir, comm=comm)


def restart_replicas(run_dir, comm=None, stop_after_s=None, stream=None):
    """Continue every unfinished replica of ``run_dir`` from its checkpoint."""
    cfg = config_from_dict(read_yaml(Path(run_dir) / "replicas.yaml"))
    comm, sub, mine = _split(comm, cfg.replicas.count)
    with RunLock(run_dir, comm):
        for index in mine:
            folder = replica_dir(run_dir, index)
            if (folder / CHECKPOINT_NAME).exists():
                if read_checkpoint(folder)["phase"] != "done":
                    restart(folder, comm=sub, stop_after_s=stop_after_s, stream=stream)
            else:  # stopped before its first checkpoint: start it again
                run(replica_config(cfg, index), run_dir=folder, comm=sub, overwrite=True,
                    stop_after_s=stop_after_s, stream=stream)
        comm.Barrier()
        return summarise(run_dir, comm=comm)


def summarise(run_dir, comm=None):
    """Mean and spread over replicas of each pair/region's coordination and first peak.

    Returns a list of rows (dicts) on every rank; rank 0 writes ``replicas-summary.json``,
    ``replicas-summary.csv`` and prints the table.
    """
    comm = get_comm(comm)
    run_dir = Path(run_dir)
    summaries = sorted(run_dir.glob("replica-*/analysis/summary.json"),
                       key=lambda p: int(p.parent.parent.name.split("-")[1]))
    if not summaries:
        raise UserError(f"no replica analyses in {run_dir} (replica-*/analysis/summary.json)")
    values = {}
    for path in summaries:
        for res in json.loads(path.read_text())["results"]:
            key = (res["pair"], res["region"])
            values.setdefault(key, {"mean_cn": [], "first_peak": []})
            for name in ("mean_cn", "first_peak"):
                v = res[name]
                values[key][name].append(np.nan if v is None else float(v))
    rows = []
    for (pair, region), v in values.items():
        row = {"pair": pair, "region": region, "replicas": len(v["mean_cn"])}
        for name in ("mean_cn", "first_peak"):
            arr = np.array(v[name], float)
            ok = arr[np.isfinite(arr)]
            row[f"{name}_mean"] = float(ok.mean()) if len(ok) else None
            row[f"{name}_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else None
            row[f"{name}_values"] = [None if not math.isfinite(x) else float(x) for x in arr]
        rows.append(row)
    if comm.Get_rank() == 0:
        (run_dir / "replicas-summary.json").write_text(json.dumps(rows, indent=1))
        with open(run_dir / "replicas-summary.csv", "w", newline="") as fh:
            fields = ["pair", "region", "replicas", "mean_cn_mean", "mean_cn_std",
                      "first_peak_mean", "first_peak_std"]
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        print(format_summary(rows, len(summaries)), flush=True)
    return rows


def format_summary(rows, n):
    fmt = lambda m, s: "-" if m is None else (f"{m:.3f}" if s is None else f"{m:.3f} ± {s:.3f}")
    lines = [f"Over {n} replicas (mean ± standard deviation):",
             f"{'pair':<6} {'region':<10} {'mean CN':<16} first peak (Å)"]
    for r in rows:
        lines.append(f"{r['pair']:<6} {r['region']:<10} {fmt(r['mean_cn_mean'], r['mean_cn_std']):<16} "
                     f"{fmt(r['first_peak_mean'], r['first_peak_std'])}")
    return "\n".join(lines)
