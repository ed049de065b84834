"""What a snapshot must hold before each native instruction can be played.

The Target builder offers an instruction on a qubit or an edge only when these parameters are
all present; the compiler reads the same names. Units are in the names (``_hz``, ``_s``,
``_dbm``, ``_a``, ``_rad``); amplitudes are fractions of full scale.
"""

from __future__ import annotations

from collections.abc import Mapping

#: What a qubit needs in the snapshot before sx, sy, x and rz are offered on it (one DRAG
#: pulse; sy is sx a quarter turn ahead in phase). ``drive_handedness`` (+1 or -1) is the
#: sense in which a play phase turns the qubit's drive axis: the compiler needs it to make
#: rz (a frame change) turn the same way as the qubit's free precession.
DRIVE_PARAMETERS = ("frequency_hz", "drive_lo_frequency_hz", "drive_lo_power_dbm",
                    "pi_amplitude", "pi2_amplitude", "drag_beta", "pulse_duration_s",
                    "pulse_sigma_s", "flux_bias_a", "drive_handedness")
#: What a qubit needs before measure is offered on it.
READOUT_PARAMETERS = ("readout_frequency_hz", "readout_lo_frequency_hz", "readout_lo_power_dbm",
                      "readout_amplitude", "readout_duration_s", "discriminator")
#: What an edge needs before cz is offered on it (both directions).
CZ_PARAMETERS = ("cz_flux_qubit", "cz_amplitude", "cz_duration_s", "cz_rise_s",
                 "cz_phase_a_rad", "cz_phase_b_rad")

#: A qubit's or an edge's calibration steps that failed and have not passed since, as
#: ``{node: reason}``, stamped with the time the failures were recorded. The calibration runner
#: writes it (and removes it once every such step passes again); the Target marks the subject
#: and keeps its last good values.
CALIBRATION_FAILED = "calibration_failed"


def has_all(params: Mapping[str, object], names: tuple[str, ...]) -> bool:
    """True when every name in ``names`` is in ``params``."""
    return all(n in params for n in names)
