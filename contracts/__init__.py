"""The contracts every part of nextbest shares: names, keys, records and settings.

One definition each, imported by the service, the offline tools, the feature repository,
the benchmarks and the tests:

| module | what |
|---|---|
| :mod:`contracts.vocabulary` | channels and offer categories (configuration, with the synthetic world's default) |
| :mod:`contracts.features` | Feast view schemas and the models' input columns, derived from a vocabulary |
| :mod:`contracts.models` | model kinds, registry names, aliases, feature services |
| :mod:`contracts.keys` | the Redis keyspace |
| :mod:`contracts.records` | decision log, feedback, marker, action and sequence records (msgspec) |
| :mod:`contracts.settings` | every environment variable, grouped settings |
| :mod:`contracts.feast_repo` | where the Feast repository is and how it is opened |

Nothing here does I/O at import time; :mod:`contracts.feast_repo` imports Feast only when a
store is opened.
"""

from contracts.features import DEFAULT_SPEC, FeatureSpec, feature_spec
from contracts.settings import Settings
from contracts.vocabulary import DEFAULT_VOCABULARY, Vocabulary

__all__ = [
    "DEFAULT_SPEC",
    "DEFAULT_VOCABULARY",
    "FeatureSpec",
    "Settings",
    "Vocabulary",
    "feature_spec",
]
