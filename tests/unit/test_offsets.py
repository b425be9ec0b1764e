"""The commit position only moves past records whose every outcome is final."""

from worker.offsets import PartitionProgress


def test_position_stops_at_the_first_unfinished_record() -> None:
    """A finished record after an unfinished one does not move the position."""
    progress = PartitionProgress()
    first, second, third = (progress.track(offset) for offset in (10, 11, 12))
    first.release()
    third.release()
    assert progress.commit_position() == 11
    progress.committed = 11
    assert progress.commit_position() is None
    second.release()
    assert progress.commit_position() == 13


def test_held_ticket_needs_every_release() -> None:
    """A record with two items and a dead letter is final only after all three outcomes."""
    progress = PartitionProgress()
    ticket = progress.track(0)
    ticket.hold()
    ticket.hold()
    ticket.release()  # the decode/transform hold
    ticket.release()
    assert progress.commit_position() is None
    assert progress.outstanding == 1
    ticket.release()
    assert progress.commit_position() == 1
    assert progress.outstanding == 0


def test_nothing_consumed_means_nothing_to_commit() -> None:
    """An idle partition has no position to commit."""
    assert PartitionProgress().commit_position() is None


def test_the_fetch_position_is_committed_once_nothing_is_outstanding() -> None:
    """A partition ending in a transaction marker commits past it, but never past open work."""
    progress = PartitionProgress()
    first = progress.track(10)
    progress.fetched_to = 13  # the client skipped a marker at 11 and an aborted record at 12
    assert progress.commit_position() is None  # offset 10 is still outstanding
    first.release()
    assert progress.commit_position() == 13
    later = progress.track(13)
    progress.fetched_to = 20
    assert progress.commit_position() == 13  # not 20: offset 13 is outstanding
    later.release()
    assert progress.commit_position() == 20
