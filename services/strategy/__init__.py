"""Strategies: a base class a trader subclasses, and a runner that makes it a bus process."""
from services.strategy.base import Strategy
from services.strategy.handle import Fill, OrderHandle

__all__ = ["Fill", "OrderHandle", "Strategy"]
