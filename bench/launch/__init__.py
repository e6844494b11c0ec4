"""Launchers place workers; the stores coordinate them. `slurm` submits them as an sbatch job
array; every launcher runs the same worker (`bench run`) against the same shared stores."""
