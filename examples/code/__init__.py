"""Code workflows from the seeds, runnable from the repository's root:

    natsflow worker --app examples.code.sync_docs          # app "docs"
    natsflow worker --app examples.code.sync_orchestrator  # app "sync"

(beside ``make run``, which serves the admin API the ``natsflow start`` verbs use).
"""
