"""The web console served by the inference HTTP server: a tutor chat page at `/` (speaking the
OpenAI-compatible API) and read-mostly pages over documents, datasets, jobs, adapters and evaluation
reports, fed by small JSON routes under `/console/api/` that call the services over gRPC."""
