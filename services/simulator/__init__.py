"""ibfleet's IB Gateway simulator: the server side of the TWS socket protocol (text format, v157-200)."""
