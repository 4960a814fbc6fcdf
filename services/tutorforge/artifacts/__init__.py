"""Artifacts, the contract the services share: the store layout and one typed repository per kind of
durable thing (dataset versions, LoRA adapters, teaching programs, evaluation reports). Services meet
only through their protos and these; no service package imports another."""
