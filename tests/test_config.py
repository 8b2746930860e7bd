import pytest
import yaml

from meltquench.config import PRESETS, describe_keys, load_config
from meltquench.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_keep_the_papers_physics_and_the_demo_is_small():
    cfg = load_config()
    assert cfg.calculator.name == "gpaw" and cfg.calculator.dispersion == "d3bj"
    assert cfg.calculator.gpaw.basis == "sz(dzp)"
    assert cfg.calculator.gpaw.hubbard_u == {"V": 3.25}
    assert cfg.build_schedule().nsteps(cfg.dynamics.timestep_fs) == 50
    demo = load_config(preset="demo")
    assert demo.calculator.gpaw.hubbard_u == {} and demo.calculator.gpaw.h == 0.25
    assert demo.build_schedule().nsteps(demo.dynamics.timestep_fs) == 20
    # the resolved YAML reads back to the same configuration
    again = yaml.safe_load(cfg.to_yaml())
    assert again == cfg.to_dict()


def test_paper_preset_has_the_papers_method():
    cfg = load_config(preset="paper-perfect")
    s = cfg.build_schedule()
    assert s.total_fs == pytest.approx(18000.0)
    assert (cfg.schedule.T_melt_K, cfg.schedule.T_final_K, cfg.dynamics.timestep_fs) == (4000, 300, 2)
    assert cfg.calculator.dispersion == "d3bj" and cfg.calculator.gpaw.basis == "dzp"
    assert cfg.dynamics.relax_fmax == 0.03


def test_file_overrides_preset_and_set_overrides_file(tmp_path):
    path = write(tmp_path, "schedule:\n  melt_ps: 1.5\ndynamics:\n  thermostat: nhc\n")
    cfg = load_config(path, preset="paper-perfect", overrides=["dynamics.seed=7"])
    assert cfg.schedule.melt_ps == 1.5 and cfg.schedule.heat_ps == 1.0
    assert cfg.dynamics.thermostat == "nhc" and cfg.dynamics.seed == 7
    assert cfg.regions.axis == 2


def test_axis_letters_and_relative_structure_file(tmp_path):
    (tmp_path / "s.xyz").write_text("1\n\nV 0 0 0\n")
    cfg = load_config(write(tmp_path, "regions: {axis: b}\nstructure: {file: s.xyz}\n"))
    assert cfg.regions.axis == 1
    assert cfg.structure.file == str(tmp_path / "s.xyz")


@pytest.mark.parametrize("text, words", [
    ("schedule:\n  melt_p: 1\n", ["schedule.melt_p", "did you mean 'melt_ps'"]),
    ("shedule:\n  melt_ps: 1\n", ["shedule", "did you mean 'schedule'"]),
    ("calculator:\n  gpaw: {basiss: dzp}\n", ["calculator.gpaw.basiss", "'basis'"]),
    ("schedule: {T_melt_K: 0}\n", ["T_melt_K", "> 0"]),
    ("schedule: {T_final_K: -3}\n", ["T_final_K"]),
    ("dynamics: {timestep_fs: 0}\n", ["timestep_fs"]),
    ("dynamics: {timestep_fs: 6}\n", ["timestep_fs", "5 fs"]),
    ("dynamics: {thermostat: nosehoover}\n", ["thermostat"]),
    ("dynamics: {seed: 1.5}\n", ["dynamics.seed", "int"]),
    ("regions: {melt_fraction: 1.01}\n", ["melt_fraction", "at most 1 (the whole cell)"]),
    ("structure: {repeat: [1, 0, 1]}\n", ["repeat"]),
    ("calculator: {name: abinit}\n", ["calculator.name"]),
    ("- a\n- b\n", ["mapping"]),
    ("schedule: [\n", ["not valid YAML"]),
])
def test_bad_config_is_one_clear_user_error(tmp_path, text, words):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, text))
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unknown_preset_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="did you mean 'paper-perfect'"):
        load_config(preset="paper-perfekt")
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="section.key=value"):
        load_config(overrides=["melt_ps=3"])


def test_every_key_is_documented():
    text = describe_keys()
    for line in text.splitlines():
        if line.startswith("      "):
            assert line.strip(), "a key without documentation"
    assert "melt_ps" in text and "thermostat" in text
    assert {"demo", "paper-perfect"} <= set(PRESETS)
