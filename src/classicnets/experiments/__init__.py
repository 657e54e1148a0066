"""Paper experiments: each paper's grid of runs, its test protocols, its tables and claims as data, and the
code that trains the grid with `classicnets.training`, tests it with `classicnets.evaluation` and writes a
report. Nothing below this package (training, evaluation, metrics, data, models, plots) imports it.

- `classicnets.experiments.vgg`: Simonyan & Zisserman's claims at small scale (`classicnets reproduce vgg`).
"""
