"""GSPO: the loss, the trainer, its batching, the collapse guards and the swap watchdog."""
