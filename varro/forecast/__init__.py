"""Varro, the application: reads today's headlines and forecasts what happens next; tomorrow's headlines score it."""
