"""GSPO: the loss, the trainer and its parts (batching, log-probs, pi_old, health), the guards and the swap watchdog."""
