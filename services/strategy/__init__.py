"""Strategies: a base class a trader subclasses, and a runner that makes it a bus process."""
from services.strategy.base import Strategy

__all__ = ["Strategy"]
