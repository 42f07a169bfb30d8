"""nabaa's model package: modules, task schema, preprocessing and (de)serialisation.

Imports neither ``training`` nor ``inference``.
"""

from model.modeling import MultiTaskClassifier, MultiTaskConfig
from model.schema import Task, parse_tasks

__all__ = ["MultiTaskClassifier", "MultiTaskConfig", "Task", "parse_tasks"]
