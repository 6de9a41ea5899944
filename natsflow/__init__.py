"""natsflow: durable workflows on NATS JetStream.

The public API is what this module exports (pinned by a test). The folders
beside it are the subpackages, one layer each: ``natsflow.events`` (types,
fold, codec) <- ``natsflow.manifests`` (schema, the manifest decider) <-
``natsflow.actors.jetstream`` (the JetStream adapter) <- ``natsflow.actors``
<- ``natsflow.service`` (CLI, HTTP, admin API, process wiring).
"""
