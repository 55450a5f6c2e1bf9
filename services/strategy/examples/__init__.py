"""Two real example strategies: order-book imbalance momentum and z-score mean reversion."""
