"""The daily cycle, the nightly over days, the cron line and the demo."""
