# GPAW build configuration that scripts/setup.sh passes as GPAW_CONFIG where Debian's
# libscalapack-openmpi-dev is installed (GPAW's Ubuntu recipe, without FFTW): libxc, the C BLAS
# (a site configuration replaces GPAW's own detection, so it must be named) and ScaLAPACK, which
# GPAW 26's LCAO eigensolver uses when the bands are split over ranks
# (calculator.gpaw.parallel: {band: N}); see benchmarks/README.md, "GPAW on 2 ranks".
scalapack = True
libraries = ['xc', 'blas', 'scalapack-openmpi']
