"""Render stage: Spec -> DesiredState (images, DAGs, services) with content hashes."""
