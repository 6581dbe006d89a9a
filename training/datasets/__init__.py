"""Data sets: the synthetic world (generator and ground truth) and adapters for public data.

* :mod:`training.datasets.world`: the synthetic customer world, written as the Parquet files
  the feature repository reads, with the ground truth that scores any policy;
* :mod:`training.datasets.hillstrom`: the Hillstrom e-mail experiment (MineThatData);
* :mod:`training.datasets.bank`: UCI Bank Marketing mapped onto the propensity problem.
"""
