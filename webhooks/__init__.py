"""GitHub and GitLab webhooks: verify, parse, and report commit status."""
