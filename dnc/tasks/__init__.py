"""Task modules: each method turns a batch into a loss dict for the shared engine."""

from __future__ import annotations

from dnc.tasks.base import Task
from dnc.tasks.cotrain import CoTrainingTask

__all__ = ["CoTrainingTask", "Task"]
