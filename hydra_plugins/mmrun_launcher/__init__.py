"""mmrun's Hydra plugins: the warm-worker launcher and the grid sweeper (logic in mmrun.launch)."""
