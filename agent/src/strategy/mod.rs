//! Strategy: from usage, forecast, SLO slack and budget to a bid. Pure logic, no I/O.
