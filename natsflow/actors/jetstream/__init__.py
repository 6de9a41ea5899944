"""The JetStream adapter: streams, subjects, the event store, publishing, pulling, KV.

The only code in natsflow that speaks NATS and turns its errors into natsflow's
own (``ConcurrencyConflict``, ``Unavailable``, ``NotFound``). It stands on
``events`` and ``manifests`` and is what ``actors`` stand on.
"""
