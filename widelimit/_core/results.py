"""How an iterative solve ended (optimistix style): returned in the result, raised with ``throw``."""

import equinox as eqx


class RESULTS(eqx.Enumeration):
    successful = ""
    max_steps_reached = (
        "The solver did not reach the requested tolerance within `max_steps` steps. "
        "Raise `max_steps`, loosen `rtol`, or pass `throw=False` to inspect the result."
    )
    nonfinite = "Non-finite values appeared (NaN or Inf in the data, or overflow)."
    stalled = (
        "The fit could not lower the loss any further before its first-order conditions held to "
        "`tol` (the dtype's precision bounds them): use float64, or loosen `tol`."
    )
    out_of_range = (
        "W(λ) is outside the range of the dtype (it overflows, or underflows below its smallest "
        "normal number, where a certificate means nothing): use float64 (jax_enable_x64) or rescale X."
    )
