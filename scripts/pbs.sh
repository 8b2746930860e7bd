#!/usr/bin/env bash
# PBS/Torque batch script for one meltquench run, or for the finish of one (FINISH).
# Change only the lines marked "EDIT".
# Submit:   qsub scripts/pbs.sh
#PBS -N meltquench                           # EDIT: job name
#PBS -l nodes=1:ppn=32                       # EDIT: nodes and ranks per node
#PBS -l walltime=24:00:00                    # EDIT: wall time (keep STOP_AFTER below it)
#PBS -j oe
set -euo pipefail

CONFIG=config.yaml                           # EDIT: configuration file (or "" and PRESET)
PRESET=                                      # EDIT: e.g. paper-perfect when CONFIG is ""
RUN_DIR=runs/${PBS_JOBNAME:-meltquench}      # EDIT: run folder (continued if it has a checkpoint)
STOP_AFTER=23:45:00                          # EDIT: stop (checkpointed) after this wall time
FINISH=()                                    # EDIT: to finish RUN_DIR, a run that is over, the
                                             # finish's options, e.g. (--finish-of paper-perfect-ml)
NP=$(wc -l < "${PBS_NODEFILE:-/dev/null}" 2>/dev/null || echo 1)
# module load openmpi python                 # EDIT: your site's modules / environment

export OMP_NUM_THREADS=1
cd "${PBS_O_WORKDIR:-.}"
if [ -n "$CONFIG" ]; then SOURCE=("$CONFIG"); else SOURCE=(--preset "$PRESET"); fi
if [ ${#FINISH[@]} -gt 0 ]; then              # the same command starts and continues it
  meltquench finish "$RUN_DIR" "${FINISH[@]}" --dry-run
  exec mpirun -np "$NP" meltquench finish "$RUN_DIR" "${FINISH[@]}" --stop-after "$STOP_AFTER"
fi
if [ -f "$RUN_DIR/checkpoint.npz" ]; then
  exec mpirun -np "$NP" meltquench run --restart "$RUN_DIR" --stop-after "$STOP_AFTER"
fi
meltquench run "${SOURCE[@]}" -o "$RUN_DIR" --dry-run
exec mpirun -np "$NP" meltquench run "${SOURCE[@]}" -o "$RUN_DIR" --stop-after "$STOP_AFTER"
