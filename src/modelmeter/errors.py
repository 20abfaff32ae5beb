"""The one exception tree of modelmeter.

Every error a user can cause derives from :class:`ModelmeterError`; its message names the bad value
and says how to fix it. The CLI prints ``str(error)`` on one line and exits non-zero.
"""

from __future__ import annotations


class ModelmeterError(Exception):
    """Root of all modelmeter errors."""

    exit_code = 2


class SpecError(ModelmeterError):
    """A model spec, preset name, config file or factory could not be resolved."""


class InputError(ModelmeterError):
    """Example inputs are malformed or do not fit the model."""


class ModelRunError(ModelmeterError):
    """The model raised while it ran under capture; ``module_path`` says where."""

    exit_code = 3

    def __init__(self, message: str, module_path: str = "", answered_reads: int = 0) -> None:
        super().__init__(message)
        self.module_path = module_path
        #: on meta, how many reads of tensor values the run had answered without a value before it failed
        self.answered_reads = answered_reads


class UncountedOpsError(ModelmeterError):
    """Raised in strict mode when some ops have no FLOP rule."""

    exit_code = 4


class RuleError(ModelmeterError):
    """A cost rule is malformed or failed on an op."""


class HardwareError(ModelmeterError):
    """Unknown device, bad hardware file, or a figure missing for the asked dtype."""


class MeasurementError(ModelmeterError):
    """A measurement could not be taken (device missing, meter unavailable, out of memory)."""


class OptionalDependencyError(ModelmeterError):
    """A feature needs a package from an extra that is not installed."""

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: pip install 'modelmeter[{extra}]'"
        )
        self.package = package
        self.extra = extra


def require(module: str, extra: str, feature: str):  # noqa: ANN201 - returns a module
    """Import an optional dependency or raise an error that names the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise OptionalDependencyError(module.split(".")[0], extra, feature) from exc
