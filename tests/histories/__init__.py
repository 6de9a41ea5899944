"""Golden histories of the example workflows (see ``tests.histories.golden``)."""
