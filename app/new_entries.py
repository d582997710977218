"""A worker's reads of new stream entries, each the cheapest way for the traffic.

A trickle (under steady traffic) is read with the lease check in one round
trip (a script), at most ``FEW_ENTRIES`` at a time; a stream whose last read
came back full has a backlog, and is read by a transaction, whose reply costs
Redis less per entry than a script's. While a backlog lasts, a reader thread
reads the batch after the one being learned, so that the worker's main thread
does not wait for Redis to send it.

Every read delivers its entries to the consumer (they become pending), also
one that fails or is dropped unread: the worker then reads the stream's
pending entries again (app/worker.py).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait

from app.event_stream import EventStream

FEW_ENTRIES = 500  # the most new entries read in one round trip (a script)


class NewEntries:
    """Reads of new entries of the streams a worker holds, with reads ahead."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        # per stream: the last entry id read (or, once a read found nothing new, delivered)
        self.last_read: dict[str, bytes] = {}
        self.full: set[str] = set()  # streams whose last read came back full: a backlog
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-reader")
        self._ahead: dict[str, Future] = {}  # per stream: the next batch, being read

    def read(self, experiment: str, consumer: str, count: int, *, ahead: int = 0) -> list:
        """Up to ``count`` new entries of ``experiment``'s stream, delivered to ``consumer``
        while it holds the lease (a read ahead's, if one waits).

        With ``ahead``, a read that returns exactly ``ahead`` entries (a full batch:
        more is waiting) starts the read of the next ``ahead`` on the reader thread.
        Raises what the read raised (``LeaseLost``, a connection error); its
        entries may have been delivered all the same.
        """
        pending = self._ahead.pop(experiment, None)
        if pending is not None:
            entries = pending.result()
        else:
            entries = self._read(experiment, consumer, count)
        if entries:
            self.last_read[experiment] = entries[-1][0]
        if ahead and len(entries) == ahead:
            self._ahead[experiment] = self._reader.submit(
                self.stream.read_new, experiment, consumer, ahead
            )
        return entries

    def _read(self, experiment: str, consumer: str, count: int) -> list:
        """A backlog's by a transaction, a trickle's in one round trip (a script)."""
        if experiment in self.full:
            entries = self.stream.read_new(experiment, consumer, count)
            full = len(entries) == count
        else:
            few = min(count, FEW_ENTRIES)
            delivery = self.stream.read_new_few(experiment, consumer, few)
            entries = delivery.entries
            full = len(entries) == few
            if delivery.last_delivered is not None:  # nothing new: wait for what follows it
                self.last_read[experiment] = delivery.last_delivered
        if full:
            self.full.add(experiment)
        else:
            self.full.discard(experiment)
        return entries

    def finish_reads_ahead(self) -> None:
        """Wait until every read ahead has its reply (they WATCH the lease keys)."""
        wait(list(self._ahead.values()))

    def drop(self, *experiments: str) -> list[str]:
        """Wait for the reads ahead (only ``experiments``' if named) and leave their entries.

        Returns the streams whose read ahead was dropped: their entries were
        delivered, so they stay pending until those streams' pending entries are
        read again.
        """
        dropped = []
        for experiment in experiments or list(self._ahead):
            pending = self._ahead.pop(experiment, None)
            if pending is not None:
                pending.exception()  # waits; whatever it delivered is read again
                dropped.append(experiment)
        return dropped

    def close(self) -> None:
        """Stop the reader thread; reads ahead not yet dropped finish first."""
        self._reader.shutdown()
