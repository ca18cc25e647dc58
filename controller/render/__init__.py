"""Render: Spec -> DesiredState (image build specs, Airflow DAG files, serving manifests), with content hashes.

`render` is imported on first use: the settings alone (what the CLI's configuration reads) do not
load the renderers.
"""

from typing import TYPE_CHECKING, Any

from controller.render.settings import RenderSettings, ServingTarget

if TYPE_CHECKING:
    from controller.render.desired import render

__all__ = ["RenderSettings", "ServingTarget", "render"]


def __getattr__(name: str) -> Any:
    if name == "render":
        from controller.render.desired import render

        return render
    raise AttributeError(f"module 'controller.render' has no attribute {name!r}")
