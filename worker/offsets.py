"""Which offsets may be committed: the contiguous prefix of records whose work is finished.

Every consumed record gets a :class:`Ticket`. The ticket counts the outcomes still owed for
that record at this destination (one per item sent, one per dead letter being written). A
partition's commit position is one past the last ticket of the unbroken run of finished
tickets from the oldest. Adding and finishing are O(1); finding the position is amortised O(1).
"""

from __future__ import annotations

from collections import deque


class Ticket:
    """Outcomes still owed for one consumed record."""

    __slots__ = ("offset", "partition", "pending", "size")

    def __init__(self, partition: PartitionProgress, offset: int, size: int = 0) -> None:
        self.partition = partition
        self.offset = offset
        self.size = size  # the record's key and value bytes, for the memory budget
        # starts held: the record is still being decoded and transformed
        self.pending = 1

    def hold(self) -> None:
        """Owe one more outcome (an item handed to a batch, a dead letter being written)."""
        self.pending += 1

    def release(self) -> None:
        """One owed outcome reached a final state."""
        self.pending -= 1
        if self.pending == 0:
            self.partition.finished += 1


class PartitionProgress:
    """Tickets of one assigned partition, oldest first."""

    __slots__ = (
        "bytes",
        "committed",
        "fetched_to",
        "finished",
        "next_offset",
        "position",
        "revoked",
        "tickets",
    )

    def __init__(self) -> None:
        self.tickets: deque[Ticket] = deque()
        self.position: int | None = None  # one past the finished prefix
        self.committed: int | None = None  # last position the broker acknowledged
        self.revoked = False
        self.finished = 0  # tickets finished but not yet popped
        self.bytes = 0  # record bytes of the tickets not yet popped
        self.next_offset: int | None = None  # one past the last record consumed
        # the client's fetch position once everything fetched was tracked: past control
        # records (transaction markers) and aborted records, which are never handed over
        self.fetched_to: int | None = None

    def track(self, offset: int, size: int = 0) -> Ticket:
        ticket = Ticket(self, offset, size)
        self.tickets.append(ticket)
        self.bytes += size
        self.next_offset = offset + 1
        return ticket

    def commit_position(self) -> int | None:
        """The offset to commit if it moved since the last acknowledged commit, else None."""
        tickets = self.tickets
        while tickets and tickets[0].pending == 0:
            ticket = tickets.popleft()
            self.position = ticket.offset + 1
            self.bytes -= ticket.size
            self.finished -= 1
        if not tickets and self.fetched_to is not None:
            # nothing outstanding: every record below the fetch position is finished
            self.position = max(self.position or 0, self.fetched_to)
        if self.position is None or self.position == self.committed:
            return None
        return self.position

    @property
    def outstanding(self) -> int:
        """Records consumed whose outcomes are not all final yet."""
        return len(self.tickets) - self.finished
