"""The service layer of /decide and /feedback (see :mod:`service.engine.core`).

| module | job |
|---|---|
| ``core`` | :class:`DecisionEngine`: validate, allocate, read, decide, commit, respond |
| ``context`` | :class:`DecideContext`: the one value a decision carries through the stages |
| ``guard`` | the time budget and circuit breaker around every Redis call |
| ``state`` | the customer's state read (one pipelined round trip, or Redis + the Feast SDK) |
| ``records`` | the decision log record and the feedback marker (pure) |
| ``response`` | the /decide response (pure) |
| ``feedback`` | outcomes into the log, and the effects they imply |
| ``replay`` | the local spool back into Redis when it answers again |
"""

from service.engine.core import DecisionEngine
from service.engine.feedback import EFFECT_EVENTS
from service.engine.state import FeatureReader

__all__ = ["EFFECT_EVENTS", "DecisionEngine", "FeatureReader"]
