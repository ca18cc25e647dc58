"""The load stage: liminal.yml files -> typed Spec. See `load`."""

from controller.spec.load import discover, load
from controller.spec.validate import SourceFile

__all__ = ["SourceFile", "discover", "load"]
