"""The execution index: a local SQLite read model of the summaries (``ls``, ``stats``)."""

from natsflow.actors.index.db import INDEX_FILE
from natsflow.actors.index.follower import ExecutionIndex, rebuild

__all__ = ["INDEX_FILE", "ExecutionIndex", "rebuild"]
