#!/usr/bin/env bash
# Run meltquench under mpirun on one machine or an interactive allocation.
# Change only the lines marked "EDIT"; everything else checks inputs and restarts for you.
#   usage: scripts/mpirun.sh [extra meltquench run options]
#          FINISH=1 scripts/mpirun.sh [meltquench finish options]   (the finish of RUN_DIR)
set -euo pipefail

NP=${NP:-4}                                  # EDIT: MPI ranks (GPAW parallelises over them)
CONFIG=${CONFIG:-config.yaml}                # EDIT: configuration file (or "" and PRESET below)
PRESET=${PRESET:-}                           # EDIT: e.g. paper-perfect (used when CONFIG is "")
RUN_DIR=${RUN_DIR:-runs/my-run}              # EDIT: run folder (continued if it has a checkpoint)
STOP_AFTER=${STOP_AFTER:-}                   # EDIT: optional wall-time budget, e.g. 11:50:00
FINISH=${FINISH:-}                           # EDIT: 1 = the finish of RUN_DIR, a run that is over
                                             # (options as arguments, e.g. --finish-of paper-perfect-ml)

export OMP_NUM_THREADS=1                     # one thread per MPI rank
MPIRUN=${MPIRUN:-mpirun}
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ -n "$CONFIG" ]; then SOURCE=("$CONFIG"); else SOURCE=(--preset "$PRESET"); fi
STOP=(); [ -n "$STOP_AFTER" ] && STOP=(--stop-after "$STOP_AFTER")

if [ -n "$FINISH" ]; then                    # the same command starts and continues it
  meltquench finish "$RUN_DIR" --dry-run "$@"
  exec $MPIRUN -np "$NP" meltquench finish "$RUN_DIR" "${STOP[@]}" "$@"
fi
if [ -f "$RUN_DIR/checkpoint.npz" ]; then
  echo "continuing $RUN_DIR from its last checkpoint"
  exec $MPIRUN -np "$NP" meltquench run --restart "$RUN_DIR" "${STOP[@]}" "$@"
fi
# Cheap checks first: the dry run builds the model and prints the plan without any DFT.
meltquench run "${SOURCE[@]}" -o "$RUN_DIR" --dry-run
exec $MPIRUN -np "$NP" meltquench run "${SOURCE[@]}" -o "$RUN_DIR" "${STOP[@]}" "$@"
