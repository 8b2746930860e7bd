"""What a person (or a batch log) sees while a run goes on, and how a run is asked to stop.

:class:`Progress` is a tqdm bar with ETA on a terminal and plain log lines under MPI launchers
and batch schedulers; :class:`StopFlag` records SIGTERM / SIGINT, which a batch scheduler sends
before its wall-time kill, so that the run can finish its step and checkpoint.
"""
import math
import os
import signal
import sys
import time

from tqdm import tqdm

from .errors import Interrupted

#: Set by MPI launchers and batch schedulers: output then goes to a job log, not a person
#: (OpenMPI even hands its ranks a pseudo-terminal, so isatty() alone would say "terminal").
BATCH_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_JOB_ID", "PBS_JOBID")


def interactive(stream):
    """True when ``stream`` is a person's terminal: not a file, pipe, MPI rank or batch job."""
    return stream.isatty() and not any(v in os.environ for v in BATCH_VARIABLES)


def format_seconds(seconds):
    """``'1h02m03s'`` or ``'2m03s'``; ``'?'`` for an unknown (non-finite) time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """A tqdm bar with ETA on a terminal, plain log lines otherwise (rank 0 only).

    ``mode``: ``'auto'`` (bar on a terminal, log lines otherwise), ``'bar'``, ``'log'`` or
    ``'none'``. ``update(step, record)`` takes a :class:`~meltquench.observers.StepRecord`.
    """

    def __init__(self, total, initial, mode, is_root, log_every=0, stream=None):
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "bar" if interactive(self.stream) else "log"
        self.mode = mode if is_root else "none"
        self.total, self.initial = total, initial
        self.log_every = log_every or max(1, (total - initial) // 20)
        self.t0 = time.perf_counter()
        self.bar = None
        if self.mode == "bar":
            self.bar = tqdm(total=total, initial=initial, unit="step", file=self.stream,
                            dynamic_ncols=True)

    def update(self, step, record):
        if self.mode == "bar":
            self.bar.update(1)
            self.bar.set_postfix_str(f"{record.stage} T={record.T_target_K:.0f}/"
                                     f"{record.T_kin_K:.0f} K", refresh=False)
        elif self.mode == "log" and (step % self.log_every == 0 or step == self.total):
            done = step - self.initial
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / done * (self.total - step) if done else float("nan")
            print(f"step {step}/{self.total} ({100.0 * step / self.total:.1f}%)  "
                  f"t={record.time_fs:.1f} fs  {record.stage}  "
                  f"T_target={record.T_target_K:.0f} K  T_kin={record.T_kin_K:.0f} K  "
                  f"E_pot={record.E_pot_eV:.4f} eV  {record.s_per_step:.2f} s/step  "
                  f"ETA {format_seconds(eta)}", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class StopFlag:
    """Context manager: ``.signal`` is set by SIGTERM / SIGINT while it is active.

    The run stops at the end of its current step, checkpointed. A second signal stops it at
    once, in the middle of a step (one SCF that will not converge can take an hour): it raises
    :class:`~meltquench.errors.Interrupted`, whose message ends with ``restart_hint``; the run
    then continues from its last checkpoint, as after a kill.
    """

    def __init__(self, restart_hint=""):
        self.signal = None
        self.restart_hint = restart_hint
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise Interrupted(f"stopped at once by a second signal ({signal.Signals(signum).name}"
                              "), in the middle of a step: the run continues from its last "
                              f"checkpoint{'; ' + self.restart_hint if self.restart_hint else ''}")
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
