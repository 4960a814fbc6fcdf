"""Optimization service: DSPy prompt optimization of the teaching program, and pedagogical evaluation
of targets (base model, LoRA adapters, optimized programs) with a report."""
