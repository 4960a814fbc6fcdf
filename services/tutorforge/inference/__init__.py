"""Inference: one base model with many LoRA adapters, streaming generation, the RAG tutor chat, and an
OpenAI-compatible HTTP door. Engines: embedded (transformers + peft in process), tgi, openai (vLLM/SGLang)."""
