"""Reference data for unit tests that run without a gateway (the fleet's comes from IB, through
the gateway's ``Instrument`` messages): what the simulator's universe says about these."""

TEST_INSTRUMENTS = {
    "AAPL": {"min_tick": 0.01, "price_bands": [(0.0, 0.0001), (1.0, 0.01)]},
    "MSFT": {"min_tick": 0.01, "price_bands": [(0.0, 0.0001), (1.0, 0.01)]},
    "MS": {"min_tick": 0.01, "price_bands": [(0.0, 0.0001), (1.0, 0.01)]},
    "SPY": {"min_tick": 0.01, "price_bands": [(0.0, 0.0001), (1.0, 0.01)]},
    "ES": {"min_tick": 0.25, "multiplier": 50.0},
    "EUR.USD": {"min_tick": 0.00005, "lot_size": 1000.0},
}
