"""Reward building blocks shared by the apps, the weak-signal baselines, the copy score, the red team."""
