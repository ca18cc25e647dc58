"""Liminal GitOps controller: git repositories of liminal.yml -> images, Airflow DAGs, services.

The public Python surface is small on purpose; the CLI, the REST API, the configuration names
and the liminal.yml schema are the product's stable interfaces.
"""

from controller.errors import ConfigError, InputError, LiminalError, TargetError, TransientError
from controller.model import Problem, Spec

__all__ = ["ConfigError", "InputError", "LiminalError", "Problem", "Spec", "TargetError", "TransientError"]
__version__ = "0.1.0"
