"""Render: Spec -> DesiredState (image build specs, Airflow DAG files, serving manifests), with content hashes."""

from controller.render.desired import render
from controller.render.settings import RenderSettings, ServingTarget

__all__ = ["RenderSettings", "ServingTarget", "render"]
