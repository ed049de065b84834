"""The exception tree: one root that Qiskit code catches, plain messages, context attributes."""

from __future__ import annotations

import inspect
import pickle

import pytest
from qiskit.exceptions import QiskitError

import labqpu.errors as errors


def all_classes() -> list[type[BaseException]]:
    return [c for _, c in inspect.getmembers(errors, inspect.isclass)
            if issubclass(c, BaseException) and c.__module__ == errors.__name__]


def test_every_class_is_a_labqpu_error_and_a_qiskit_error() -> None:
    classes = all_classes()
    assert len(classes) >= 15
    for cls in classes:
        assert issubclass(cls, errors.LabQpuError), cls
        assert issubclass(cls, QiskitError), cls


def test_every_class_is_in_the_tree_of_the_docstring() -> None:
    for cls in all_classes():
        assert cls.__name__ in errors.__doc__, cls


def test_messages_are_plain() -> None:
    # QiskitError would quote the message; KeyError would print its repr.
    assert str(errors.CompilationError("cz on (0, 2)")) == "cz on (0, 2)"
    missing = errors.CalibrationMissingError("no snapshot 4")
    assert isinstance(missing, KeyError)
    assert str(missing) == "no snapshot 4"


def test_calibration_errors_name_subject_and_parameter() -> None:
    exc = errors.InvalidSnapshotError("must be finite", subject="qubit 3",
                                      parameter="frequency_hz")
    assert isinstance(exc, ValueError)
    assert (exc.subject, exc.parameter) == ("qubit 3", "frequency_hz")
    assert str(exc) == "qubit 3, parameter 'frequency_hz': must be finite"
    assert isinstance(errors.FitError("no peak"), errors.CalibrationError)


def test_instrument_errors_name_instrument_and_command() -> None:
    exc = errors.InstrumentLimitError("above 20 dBm", instrument="TCPIP0::lo::5025::SOCKET",
                                      command="POW 30")
    assert isinstance(exc, ValueError)
    assert (exc.instrument, exc.command) == ("TCPIP0::lo::5025::SOCKET", "POW 30")
    assert str(exc) == "[TCPIP0::lo::5025::SOCKET] above 20 dBm (command 'POW 30')"
    refused = errors.InstrumentCommandError("bad op", instrument="tcp://127.0.0.1:1",
                                            command="run", remote_type="BadRequest")
    assert refused.remote_type == "BadRequest"
    assert isinstance(errors.HardwareUnavailableError("gone"), errors.InstrumentError)


@pytest.mark.parametrize("exc", [
    errors.BackendConfigurationError("bad", path="lab.toml", field="device.num_qubits"),
    errors.CompilationError("bad", circuit="c", qubits=(0, 1), instruction="cz"),
    errors.InvalidRunInputError("bad", option="shots"),
])
def test_qiskit_face_errors_carry_their_context(exc) -> None:
    context = {k: v for k, v in vars(exc).items() if k != "message"}
    assert all(context.values()), context
    assert str(exc) == "bad"


def test_errors_survive_pickling_with_their_message() -> None:
    # Exceptions cross process and thread boundaries (job futures, multiprocessing tools).
    exc = errors.InstrumentTimeoutError("no answer in 2 s", instrument="lo", command="FREQ?")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is errors.InstrumentTimeoutError
    assert str(back) == str(exc)
    assert (back.instrument, back.command) == ("lo", "FREQ?")
    compile_error = errors.CompilationError("bad", circuit="c", qubits=(0, 1), instruction="cz")
    assert pickle.loads(pickle.dumps(compile_error)).qubits == (0, 1)


def test_qiskit_1_names_are_importable_from_labqpu_and_raised(tmp_path) -> None:
    import labqpu
    from labqpu.rack.config import load_config
    from labqpu.store import Snapshot, SnapshotBuilder

    assert issubclass(labqpu.BackendPropertyError, QiskitError)
    assert issubclass(labqpu.BackendConfigurationError, QiskitError)
    bad = tmp_path / "lab.toml"
    bad.write_text("[device]\nname = 'x'\n")
    with pytest.raises(labqpu.BackendConfigurationError, match="num_qubits"):
        load_config(bad)
    snapshot = Snapshot(SnapshotBuilder("lab5").set_qubit(0, "t1_s", 5e-5, "t1")
                        .build_document())
    with pytest.raises(labqpu.BackendPropertyError, match="qubit 0, parameter 't2_s'") as info:
        snapshot.qubit_value(0, "t2_s")
    assert (info.value.subject, info.value.parameter) == ("qubit 0", "t2_s")


def test_did_you_mean_prefers_the_same_word_in_another_case() -> None:
    """A review's case: ``labqpu calibrate drive_LO`` was told "did you mean 'drive'?"."""
    from labqpu.errors import did_you_mean

    nodes = ["drive", "drive_lo", "drive_handedness", "rabi"]
    assert did_you_mean("drive_LO", nodes) == "; did you mean 'drive_lo'?"
    assert did_you_mean("rabbi", nodes) == "; did you mean 'rabi'?"
    assert did_you_mean("zzz", nodes) == ""
