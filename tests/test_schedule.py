import pytest

from meltquench.errors import UserError
from meltquench.config import load_config
from meltquench.schedule import melt_quench

PAPER = dict(T_start_K=300.0, T_melt_K=4000.0, T_final_K=300.0, heat_fs=1000.0, melt_fs=6000.0,
             quench_fs=9000.0, final_fs=2000.0)


def test_paper_programme_is_18_ps_with_the_papers_temperatures():
    s = load_config(preset="paper-perfect").build_schedule()
    assert s.stages == melt_quench(**PAPER).stages
    assert s.total_fs == pytest.approx(18000.0)
    assert s.nsteps(2.0) == 9000
    assert s.temperature(0) == 300.0
    assert s.temperature(1000.0) == pytest.approx(4000.0)
    assert s.temperature(4000.0) == 4000.0
    assert s.temperature(7000.0 + 4500.0) == pytest.approx((4000 + 300) / 2)
    assert s.temperature(18000.0) == pytest.approx(300.0)
    assert s.temperature(1e9) == pytest.approx(300.0)
    assert [st.name for st in s.stages] == ["heat", "melt", "quench", "final"]
    assert s.stage_at(17000.0).name == "final"


def test_quench_rate_gives_the_duration():
    s = melt_quench(T_melt_K=4000, T_final_K=300, quench_fs=None, quench_rate_K_per_ps=100.0)
    assert s.stages[2].duration_fs == pytest.approx(37000.0)
    assert "K/ps" in s.describe()


def test_demo_is_short():
    assert load_config(preset="demo").build_schedule().nsteps(2.0) == 20


@pytest.mark.parametrize("bad", [dict(T_melt_K=0), dict(T_final_K=-5), dict(heat_fs=-1),
                                 dict(quench_rate_K_per_ps=10.0)])
def test_bad_programmes_are_user_errors(bad):
    with pytest.raises(UserError):
        melt_quench(**{**PAPER, **bad})
