"""The bottom layer: errors, constants, atomic files, devices, distributed helpers, signals, run folders, checkpoints and code version. Imports nothing else of this project."""
