"""Deploying what the platform built onto a Kubernetes cluster: serving a registry adapter on the cluster's
model server (`rollout.py`: TGI rolled through the Kubernetes API, vLLM loading at run time) and copying
adapters into serving pods. It sits beside the services, not in one: it reads the artifact store and talks
to Kubernetes and the model servers, never to a tutorforge service, and no service imports it."""
