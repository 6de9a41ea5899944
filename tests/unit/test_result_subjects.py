"""The result subject a task names as its ``reply_to``: stable, with a partition token."""

from __future__ import annotations

from natsflow.actors.jetstream.topology import (
    PARTITIONS,
    execution_from_subject,
    is_result_subject,
    partition,
    result_subject,
)


def test_the_result_subject_carries_a_stable_partition_token() -> None:
    subject = result_subject("hello-01hf7yat0000000000")
    _, _, token, execution = subject.split(".")
    assert execution == "hello-01hf7yat0000000000"
    assert token == str(partition(execution))
    assert 0 <= partition(execution) < PARTITIONS
    # Stored inside in-flight tasks: it must never change between versions.
    assert subject == "natsflow.result.50.hello-01hf7yat0000000000"


def test_the_actor_routes_a_result_subject_to_its_execution() -> None:
    subject = result_subject("sync-01hf7yat0000000000=entity=person")
    assert is_result_subject(subject)
    assert execution_from_subject(subject) == "sync-01hf7yat0000000000=entity=person"
    assert execution_from_subject("natsflow.in.hello-x") == "hello-x"
    assert not is_result_subject("natsflow.in.hello-x")
