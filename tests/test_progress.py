"""Progress output: plain log lines in batch jobs."""


def test_a_run_under_mpirun_writes_plain_lines_without_escape_codes(tmp_path):
    """Batch logs are plain text: under mpirun every rank's stdout is a pseudo-terminal, and
    numba's error colouring (colorama) would write an ANSI reset to it at exit."""
    from conftest import run_mpi
    proc = run_mpi(["python", "-m", "meltquench.cli", "run", "--set", "calculator.name=pair",
                    "--set", "dynamics.relax_steps=2", "-o", str(tmp_path / "run")], np=2)
    assert "Done:" in proc.stdout
    assert "\x1b" not in proc.stdout + proc.stderr
