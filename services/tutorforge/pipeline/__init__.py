"""The pipeline above the services: stages composed through the client SDK (tutorforge.client), each
returning a typed result; the embedded demo (`tutorforge demo`) and YAML specs (`tutorforge pipeline run`)
run them. The services never import this package."""
