"""What every layer shares: errors, the config dataclasses, paths, dates, the App interface, the rollout record."""
