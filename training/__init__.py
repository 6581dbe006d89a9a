"""nextbest's offline side: ``python -m training <command>`` (see :mod:`training.cli`).

| package | what |
|---|---|
| :mod:`training.datasets` | the synthetic world (generator + ground truth) and public-data adapters (Hillstrom, UCI Bank Marketing) |
| :mod:`training.pipeline` | feature store, training sets, models, evaluation, ONNX export, MLflow registry, bundle, the ``train`` stage |
| :mod:`training.measurement` | decision-log export, lift report, off-policy evaluation, replay, retraining rows, the Hillstrom validation |
| :mod:`training.simulation` | the policy simulator: world customers through a running service, scored with the truth |
| :mod:`training.cli` | the one argument tree and the command handlers |
| :mod:`training.settings` | paths and connection settings of the offline tools, from the environment |
"""
