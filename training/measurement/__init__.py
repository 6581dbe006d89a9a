"""Measuring policies from what the service logged.

* :mod:`~training.measurement.decision_log`: the decision log + feedback, exported to Parquet;
* :mod:`~training.measurement.lift`: lift per experiment and arm against the holdout;
* :mod:`~training.measurement.ope`: off-policy evaluation (IPS, SNIPS, DM, DR);
* :mod:`~training.measurement.replay`: logged decisions replayed through a candidate policy;
* :mod:`~training.measurement.log_training`: the log with outcomes as extra training rows;
* :mod:`~training.measurement.hillstrom_validation`: lift report and OPE checked on the
  Hillstrom e-mail experiment (a real randomised test).
"""
