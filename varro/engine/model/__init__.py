"""The model: loading, LoRA, the offline models, the output head's log-probs, memory, distribution."""
