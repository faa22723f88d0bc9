"""How an iterative solve ended (optimistix style): returned in the result, raised with ``throw``."""

import equinox as eqx


class RESULTS(eqx.Enumeration):
    successful = ""
    max_steps_reached = (
        "The solver did not reach the requested tolerance within `max_steps` steps. "
        "Raise `max_steps`, loosen `rtol`, or pass `throw=False` to inspect the result."
    )
    nonfinite = "Non-finite values appeared (NaN or Inf in the data, or overflow)."
