"""A finished ``meltquench adsorb`` folder recomputed with another calculator.

Single points of that calculator at the geometries the adsorption relaxed (the model, each
site with its adatom, each site's host without it) and on its own reference; no relaxation.
It asks whether a second potential gives the same E_ads and E_bind, region by region, and
costs a few calls per site: for example SevenNet-0 against the CHGNet sites of an ML run,
or one GPAW site against them.

    python benchmarks/bench_adsorb_rescore.py RUN/adsorb --set name=sevennet
    python benchmarks/bench_adsorb_rescore.py RUN/adsorb --set name=gpaw --sites site-0,site-3

``--set KEY=VALUE`` changes a key of the folder's own calculator settings (``plan.json``);
the reference (atom or bulk) and the electronic temperature are the folder's. Writes
``rescore.json`` (``--out``) and prints the table; energies in eV.
"""
import argparse
import json
from pathlib import Path

from ase.io import read

from meltquench import calculators
from meltquench.adsorption import reference_atoms
from meltquench.config import deep_merge, parse_set


def rescore(folder, overrides=(), sites=None, temperature_K=300.0):
    """Rows per site: the folder's E_ads and E_bind and those of the calculator its settings
    with ``overrides`` (``['name=sevennet', ...]``) give, at the same geometries."""
    folder = Path(folder)
    plan = json.loads((folder / "plan.json").read_text())
    done = json.loads((folder / "results.json").read_text())["sites"]
    over = parse_set([f"calculator.{item}" for item in overrides]).get("calculator", {})
    settings = calculators.CalculatorSettings.from_dict(deep_merge(plan["settings"], over))
    calc = calculators.make_calculator(settings, directory=folder / "rescore")
    calculators.set_electronic_temperature(calc, settings, temperature_K)

    def energy(atoms):
        calculators.prepare_atoms(settings, atoms)
        return float(calc.get_potential_energy(atoms))

    reference = reference_atoms(plan["species"], plan["reference"])
    e_ref = energy(reference) / len(reference)
    e_model = energy(read(folder / "tasks" / "model.traj"))
    rows = []
    for row in done:
        if sites and row["site"] not in sites:
            continue
        site = read(folder / "tasks" / f"{row['site']}.traj")
        e_site, e_host = energy(site), energy(site[:-1])
        rows.append({"site": row["site"], "region": row["region"],
                     "E_ads_eV": row["E_ads_eV"], "E_bind_eV": row.get("E_bind_eV"),
                     "new_E_ads_eV": e_site - e_model - e_ref,
                     "new_E_bind_eV": e_site - e_host - e_ref})
    return {"folder": str(folder), "was": plan["calculator"],
            "calculator": calculators.describe(settings), "reference": plan["reference"],
            "rows": rows}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a finished 'meltquench adsorb' output folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a key of the folder's calculator (name=sevennet)")
    p.add_argument("--sites", help="comma-separated site names (default: every site)")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="electronic temperature for smearing that follows it (K)")
    p.add_argument("-o", "--out", type=Path)
    args = p.parse_args(argv)
    result = rescore(args.folder, args.set, args.sites.split(",") if args.sites else None,
                     args.temperature)

    def num(value):
        return f"{value:+9.3f}" if value is not None else f"{'-':>9}"

    print(f"{args.folder}: {result['was']} -> {result['calculator']} "
          f"(reference {result['reference']}), same geometries")
    print(f"{'site':<8} {'region':<10} {'E_ads':>9} {'new':>9} {'E_bind':>9} {'new':>9}")
    for r in result["rows"]:
        print(f"{r['site']:<8} {r['region']:<10} {num(r['E_ads_eV'])} {num(r['new_E_ads_eV'])} "
              f"{num(r['E_bind_eV'])} {num(r['new_E_bind_eV'])}")
    out = args.out or args.folder / "rescore.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
