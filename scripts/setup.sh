#!/usr/bin/env bash
# Set up everything meltquench needs on a Debian/Ubuntu machine, idempotently:
# the system libraries GPAW builds against (libxc, OpenBLAS, FFTW, OpenMPI headers and runtime),
# then meltquench itself with its Python dependencies (pip install -e ".[EXTRAS]").
#   usage: scripts/setup.sh [EXTRAS]   (comma-separated extras of setup.cfg, e.g. dev,ml; default dev)
# Set MELTQUENCH_SKIP_APT=1 on a cluster where the modules system provides MPI and BLAS.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-dev}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

APT_PACKAGES="libxc-dev libopenblas-dev libfftw3-dev libopenmpi-dev openmpi-bin libscalapack-openmpi-dev"
if [ "${MELTQUENCH_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
  missing=""
  for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
  else
    echo "setup: system packages present ($APT_PACKAGES)"
  fi
fi

# GPAW compiles from source; where Debian's ScaLAPACK is installed it is built with it
# (scripts/gpaw-siteconfig.py), which lets the LCAO eigensolver divide over ranks. A user's own
# GPAW_CONFIG wins.
if [ -z "${GPAW_CONFIG:-}" ] && ls /usr/lib/*/libscalapack-openmpi.so >/dev/null 2>&1; then
  export GPAW_CONFIG="$PWD/scripts/gpaw-siteconfig.py"
fi

# The ml extra needs torch. PyPI's default Linux build carries CUDA (several GB); the CPU build
# is enough here. Where torch is missing, install MELTQUENCH_TORCH first (default torch==2.13.0,
# the CPU build this project's machines hold; set e.g. MELTQUENCH_TORCH=torch for PyPI's
# default): the extra's range then installs no other torch.
case ",$EXTRAS," in *,ml,*)
  if ! $PYTHON -c "import torch" 2>/dev/null; then
    echo "setup: installing ${MELTQUENCH_TORCH:-torch==2.13.0} for the ml extra"
    $PYTHON -m pip install -q "${MELTQUENCH_TORCH:-torch==2.13.0}"
  fi
  ML_IMPORTS=", chgnet, sevenn";;
esac
have_extras() {
  case ",$EXTRAS," in *,dev,*) $PYTHON -c "import pytest, xdist, tblite" 2>/dev/null || return 1;; esac
  case ",$EXTRAS," in *,ml,*) $PYTHON -c "import chgnet, sevenn" 2>/dev/null || return 1;; esac
  return 0
}
if $PYTHON -c "import meltquench, gpaw, numba, mpi4py, ase, dftd3" 2>/dev/null \
   && [ "$($PYTHON -c 'import meltquench,os;print(os.path.realpath(os.path.dirname(meltquench.__file__)))')" = "$(realpath meltquench)" ] \
   && have_extras; then
  echo "setup: Python packages present; refreshing the editable install of meltquench"
  $PYTHON -m pip install -q --no-deps -e . 
else
  echo "setup: installing Python packages: meltquench[$EXTRAS] and its dependencies (ase, gpaw +"
  echo "       gpaw-data, numba, numpy, scipy, mpi4py, dftd3${ML_IMPORTS:-}, ...); GPAW compiles in"
  echo "       about a minute"
  $PYTHON -m pip install -q -e ".[$EXTRAS]"
fi
# A GPAW built earlier without ScaLAPACK (or taken from pip's wheel cache) is rebuilt with it.
if [ "${GPAW_CONFIG:-}" = "$PWD/scripts/gpaw-siteconfig.py" ] \
   && ! $PYTHON -c "from gpaw.utilities import compiled_with_sl as s; raise SystemExit(not s())" 2>/dev/null; then
  version=$($PYTHON -c "import gpaw; print(gpaw.__version__)")
  echo "setup: rebuilding gpaw $version with ScaLAPACK ($GPAW_CONFIG)"
  $PYTHON -m pip install -q --no-deps --no-cache-dir --force-reinstall --no-binary gpaw "gpaw==$version"
fi
$PYTHON -c "import gpaw, numba, mpi4py, ase; from gpaw.utilities import compiled_with_sl; print(f'setup: ok (ase {ase.__version__}, gpaw {gpaw.__version__}{\" with ScaLAPACK\" if compiled_with_sl() else \"\"}, numba {numba.__version__}, mpi4py {mpi4py.__version__})')"
