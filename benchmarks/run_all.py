"""Run every benchmark and print one table of the headline ratios.

    python benchmarks/run_all.py            # full sizes (about 10 minutes, GPAW included)
    python benchmarks/run_all.py --quick    # small sizes, a few minutes
    python benchmarks/run_all.py --no-gpaw  # skip the GPAW SCF benchmark (the slow one)

Each benchmark runs in its own interpreter (as ``python benchmarks/bench_*.py``) and prints its
full table as it goes; this script then collects the lines that carry the goals into one table.
Quote the ratios, not the seconds: the machines are shared and noisy.
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script, args):
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"\n$ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr[-2000:])
    return proc.stdout, proc.returncode


def integrator_rows(out):
    """Per size: the smallest ASE/ours ratio over the schemes (goal >= 10)."""
    worst = {}
    for m in re.finditer(r"^\s*(\d+)\s+(\w+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) \|", out, re.M):
        n, scheme, ratio = int(m.group(1)), m.group(2), float(m.group(5))
        if n not in worst or ratio < worst[n][1]:
            worst[n] = (scheme, ratio)
    return [("integrators", f"{n} atoms, slowest scheme vs ASE ({s})", f"{r:.1f}x faster",
             ">= 10x", "yes" if r >= 10 else "no") for n, (s, r) in sorted(worst.items())]


def analysis_rows(out):
    rows = []
    for m in re.finditer(r"^(\d+) atoms: fastest other tool (.+) is ([\d.]+)x slower", out, re.M):
        r = float(m.group(3))
        rows.append(("analysis", f"{m.group(1)} atoms, V-O RDF + CN vs {m.group(2)}",
                     f"{r:.1f}x faster", ">= 2x", "yes" if r >= 2 else "no"))
    m = re.search(r"^scaling: .* time ratio ([\d.]+)", out, re.M)
    if m:
        r = float(m.group(1))
        rows.append(("analysis", "30k / 3k atoms time", f"{r:.1f}", "<= 12",
                     "yes" if r <= 12 else "no"))
    m = re.search(r"^MPI: .* speed-up ([\d.]+)x", out, re.M)
    if m:
        r = float(m.group(1))
        rows.append(("analysis", "mpirun -np 2 vs 1 rank (wall)", f"{r:.2f}x", ">= 1.8x",
                     "yes" if r >= 1.8 else "no (needs 2 idle cores)"))
    return rows


def gpaw_rows(out):
    rows = []
    for m in re.finditer(r"^summary: (.+?): (.+?) \(goal (.+?)\) (\w+)$", out, re.M):
        rows.append(("gpaw", m.group(1), m.group(2), m.group(3), m.group(4)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes only")
    p.add_argument("--no-gpaw", action="store_true", help="skip the GPAW SCF benchmark")
    args = p.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    rows, failed = [], []
    out, rc = run("bench_integrators.py", quick)
    rows += integrator_rows(out)
    failed += ["bench_integrators.py"] if rc else []
    out, rc = run("bench_analysis.py", quick)
    rows += analysis_rows(out)
    failed += ["bench_analysis.py"] if rc else []
    if not args.no_gpaw:
        out, rc = run("bench_gpaw_scf.py", quick)
        rows += gpaw_rows(out)
        failed += ["bench_gpaw_scf.py"] if rc else []
    head = ("benchmark", "case", "measured", "goal", "met")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(5)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
    print("\n" + line(head))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
