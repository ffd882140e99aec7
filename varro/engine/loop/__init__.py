"""The daily cycle, the nightly over days, the cron line and the demo.

The nightly verb reaches a day's cycle in four calls: night.run_night ->
nightly.run_nightly -> night.Night.run_day -> cycle.step.
"""
