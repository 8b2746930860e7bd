"""A finished ``meltquench adsorb`` folder recomputed with another calculator.

Single points of that calculator at the geometries the adsorption relaxed (the model, each
site with its adatom, each site's host without it) and on its own reference; no relaxation.
It asks whether a second potential gives the same E_ads and E_bind, region by region, and
costs a few calls per site: for example SevenNet-0 against the CHGNet sites of an ML run,
or one GPAW site against them.

    python benchmarks/bench_adsorb_rescore.py RUN/adsorb --set name=sevennet
    python benchmarks/bench_adsorb_rescore.py RUN/adsorb --set name=gpaw --sites site-0,site-3
    python benchmarks/bench_adsorb_rescore.py RUN/adsorb --finish-of ml-demo \
        --sites site-1,site-4 --contrast

``--contrast`` computes only the listed sites (their adatom included): E_ads of each site less
that of the first, in which the model and the reference cancel. A site named ``OTHER:NAME``
is site NAME of another adsorption folder OTHER (another model of the same cell, e.g. the
defective one): with ``--hosts`` its E_bind less the first site's compares the two models'
binding, the reference cancelling (``--sites site-1,../perfect/adsorb:site-1``). One single
point per site, for a costly calculator where the model, the reference and every host would
be too many (a 121-atom GPAW single point takes half an hour on one core here). ``--hosts``
adds each site's host (its adatom taken out) for E_bind less the first site's, which leaves
out what the adatom did to its host (E_deform): two single points per site.

Under ``mpirun`` GPAW computes on every rank and rank 0 reports.

``--finish-of PRESET`` takes a preset's finish calculator (the ML presets' GPAW) in place of
the folder's own settings (``plan.json``); ``--set KEY=VALUE`` changes a key of them;
the reference (atom or bulk) and the electronic temperature are the folder's. Writes
``rescore.json`` (``contrast.json`` with ``--contrast``; ``--out``) and prints the table;
energies in eV.
"""
import argparse
import dataclasses
import json
from pathlib import Path

from ase.io import read

from meltquench import calculators
from meltquench.adsorption import reference_atoms
from meltquench.config import deep_merge, load_config, parse_set
from meltquench.kernels.parallel import is_root


def rescore_settings(settings, overrides=(), finish_of=None):
    """The calculator settings to rescore with: ``settings`` (a dict, the folder's), or the
    finish calculator of preset ``finish_of``, with ``overrides`` on top."""
    if finish_of:
        finish = load_config(preset=finish_of).finish.calculator
        if finish is None:
            raise SystemExit(f"--finish-of: preset {finish_of!r} has no finish calculator")
        settings = dataclasses.asdict(finish)
    over = parse_set([f"calculator.{item}" for item in overrides]).get("calculator", {})
    return calculators.CalculatorSettings.from_dict(deep_merge(settings, over))


def contrast_sites(folder, done, sites, species):
    """[(folder, its results row)] of the ``--contrast`` sites in the order given: a name is a
    site of ``folder`` (``done``: its results rows), ``OTHER:NAME`` a site of the adsorption
    folder OTHER (another model: the same species; rescored with the same settings)."""
    names = sites or [row["site"] for row in done]
    chosen = []
    for name in names:
        where, _, site = name.rpartition(":")
        where = Path(where) if where else folder
        rows = done
        if where != folder:
            other = json.loads((where / "plan.json").read_text())
            if other["species"] != species:
                raise SystemExit(f"{where} adsorbed {other['species']}, {folder} {species}")
            rows = json.loads((where / "results.json").read_text())["sites"]
        chosen += [(where, row) for row in rows if row["site"] == site]
    return chosen


def rescore(folder, overrides=(), sites=None, temperature_K=300.0, contrast=False,
            finish_of=None, hosts=False):
    """Rows per site: the folder's E_ads and E_bind and those of the calculator its settings
    with ``overrides`` (``['name=sevennet', ...]``) give, at the same geometries. With
    ``contrast``, rows of E_ads less the first site's (``dE_ads_eV``, ``new_dE_ads_eV``) from
    the sites' energies alone. ``finish_of``: a preset whose finish calculator replaces the
    folder's settings."""
    folder = Path(folder)
    plan = json.loads((folder / "plan.json").read_text())
    done = json.loads((folder / "results.json").read_text())["sites"]
    settings = rescore_settings(plan["settings"], overrides, finish_of)
    calc = calculators.make_calculator(settings, directory=folder / "rescore")
    calculators.set_electronic_temperature(calc, settings, temperature_K)

    def energy(atoms):
        calculators.prepare_atoms(settings, atoms)
        return float(calc.get_potential_energy(atoms))

    if contrast:
        chosen = contrast_sites(folder, done, sites, plan["species"])
        if len(chosen) < 2:
            raise SystemExit("--contrast needs two or more finished sites (--sites A,B)")
        if not hosts and any(where != folder for where, _ in chosen):
            raise SystemExit("a site of another folder (another model) needs --hosts: only "
                             "E_bind differences compare across models")
        rows = []
        for where, row in chosen:
            site = read(where / "tasks" / f"{row['site']}.traj")
            rows.append({"site": row["site"] if where == folder else f"{where}:{row['site']}",
                         "region": row["region"], "folder": str(where),
                         "E_ads_eV": row["E_ads_eV"], "E_bind_eV": row.get("E_bind_eV"),
                         "new_E_site_eV": energy(site)})
            if hosts:
                rows[-1]["new_E_host_eV"] = energy(site[:-1])
        for r in rows:
            same_model = r["folder"] == rows[0]["folder"]
            r["dE_ads_eV"] = r["E_ads_eV"] - rows[0]["E_ads_eV"]
            # across models E(site) differences hold the models' energies: no E_ads contrast
            r["new_dE_ads_eV"] = (r["new_E_site_eV"] - rows[0]["new_E_site_eV"]
                                  if same_model else None)
            if hosts:
                r["dE_bind_eV"] = (r["E_bind_eV"] - rows[0]["E_bind_eV"]
                                   if None not in (r["E_bind_eV"], rows[0]["E_bind_eV"])
                                   else None)
                r["new_dE_bind_eV"] = (r["new_E_site_eV"] - r["new_E_host_eV"]
                                       - rows[0]["new_E_site_eV"] + rows[0]["new_E_host_eV"])
        return {"folder": str(folder), "was": plan["calculator"],
                "calculator": calculators.describe(settings), "contrast_to": rows[0]["site"],
                "rows": rows}
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
    p.add_argument("--finish-of", metavar="PRESET",
                   help="a preset's finish calculator in place of the folder's (ml-demo)")
    p.add_argument("--sites", help="comma-separated site names (default: every site); with "
                   "--contrast --hosts, OTHER:NAME is site NAME of adsorption folder OTHER")
    p.add_argument("--temperature", type=float, default=300.0,
                   help="electronic temperature for smearing that follows it (K)")
    p.add_argument("--contrast", action="store_true",
                   help="only the sites' energies: E_ads less the first site's")
    p.add_argument("--hosts", action="store_true",
                   help="with --contrast: each site's host too (its adatom taken out), for "
                   "E_bind less the first site's")
    p.add_argument("-o", "--out", type=Path)
    args = p.parse_args(argv)
    if args.hosts and not args.contrast:
        p.error("--hosts goes with --contrast (without it every host is computed anyway)")
    result = rescore(args.folder, args.set, args.sites.split(",") if args.sites else None,
                     args.temperature, args.contrast, args.finish_of, args.hosts)

    def num(value):
        return f"{value:+9.3f}" if value is not None else f"{'-':>9}"

    width = max(8, *(len(r["site"]) for r in result["rows"]))

    if args.contrast:
        head = f"same geometries; E_ads less {result['contrast_to']}'s"
        columns = [("dE_ads", "dE_ads_eV"), ("new", "new_dE_ads_eV")]
        if args.hosts:
            columns += [("dE_bind", "dE_bind_eV"), ("new", "new_dE_bind_eV")]
    else:
        head = f"(reference {result['reference']}), same geometries"
        columns = [("E_ads", "E_ads_eV"), ("new", "new_E_ads_eV"), ("E_bind", "E_bind_eV"),
                   ("new", "new_E_bind_eV")]
    if not is_root():  # under mpirun (GPAW on every rank) rank 0 reports
        return 0
    print(f"{args.folder}: {result['was']} -> {result['calculator']} {head}")
    print(f"{'site':<{width}} {'region':<10} " + " ".join(f"{title:>9}" for title, _ in columns))
    for r in result["rows"]:
        print(f"{r['site']:<{width}} {r['region']:<10} "
              + " ".join(num(r[key]) for _, key in columns))
    out = args.out or args.folder / ("contrast.json" if args.contrast else "rescore.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {out}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
