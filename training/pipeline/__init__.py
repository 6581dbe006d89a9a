"""The training pipeline, one module per stage.

* :mod:`~training.pipeline.featurestore`: ``feast apply`` + materialize (SQLite or Redis);
* :mod:`~training.pipeline.dataset`: point-in-time training sets through the feature services;
* :mod:`~training.pipeline.models`: the LightGBM classifiers;
* :mod:`~training.pipeline.evaluate`: held-out metrics, baselines, regret with the ground truth;
* :mod:`~training.pipeline.onnx_export`: ONNX conversion and the parity check;
* :mod:`~training.pipeline.registry`: MLflow tracking, registry, promotion gates;
* :mod:`~training.pipeline.train`: the ``train`` stage that runs the ones above;
* :mod:`~training.pipeline.bundle`: the ``export-bundle`` stage (champions -> ``models/``).
"""
