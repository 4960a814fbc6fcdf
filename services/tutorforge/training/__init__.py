"""Training service: LoRA fine-tuning on Ray Train, durable jobs, adapter publishing."""
