"""The position machine under arbitrary interleavings of replay, live, lag and epochs.

A model of one stream in Redis (``World``: epochs that replace each other,
appends published on the live channel, trimmed history, expired events, lost
writes, a lost and rebuilt record) runs against one ``Position``, driven the
way ``ClientStream`` drives it: live messages delivered in order, dropped
(then a gap signal follows, as the live source promises), or not taken (a
full outbox: a gap); reads issued, executed atomically at some later moment,
and applied later still; spurious gap signals (the idle resync). Every event
the machine emits is checked the way a client would check it (``Client``),
and at the end, once every message is delivered and every read done, the
client must be level with the stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenwire import events as ev
from tokenwire.cursor import Cursor
from tokenwire.edge.position import Live, Position, Read
from tokenwire.events import Event
from tokenwire.store import Page, Snapshot, StreamMeta

PAGE = 4  # small pages: replays cross page boundaries often


def token(epoch: str, seq: int, content: str) -> Event:
    return Event(epoch, seq, "token", ev.dumps({"content": content}))


@dataclass
class World:
    """One stream as Redis holds it, with the whole history of every epoch
    (what each seq of each epoch carried: a client's text is checked against it)."""

    record: bool = True
    epoch: str | None = None
    events: list[Event] = field(default_factory=list)  # the current epoch's, kept ones
    last_seq: int = 0
    first_kept: int = 1
    finished: bool = False
    expired: bool = False
    frozen: bool = False  # lost its last writes: only a new epoch may follow
    history: dict[str, list[str]] = field(default_factory=dict)  # epoch -> content by seq-1
    epochs: int = 0
    published: list[Event] = field(default_factory=list)  # the live channel, in order

    def meta(self) -> StreamMeta:
        status = "done" if self.finished else "running" if self.epoch else "queued"
        return StreamMeta("s", status, self.epoch, 1, self.last_seq, "m", 0, 0, None, None)

    def text(self, epoch: str, upto: int) -> str:
        return "".join(self.history[epoch][:upto])

    # --- writes (the worker's scripts) ----------------------------------------

    def begin(self) -> None:
        if not self.record or self.finished:
            return
        self.epochs += 1
        self.epoch = f"e{self.epochs}"
        self.history[self.epoch] = []
        self.events, self.last_seq, self.first_kept, self.frozen = [], 0, 1, False
        self._add("start", "")

    def append(self, content: str) -> None:
        if self.epoch is not None and self.record and not self.finished and not self.frozen:
            self._add("token", content)

    def finish(self) -> None:
        if self.epoch is not None and self.record and not self.finished and not self.frozen:
            self._add("done", "")
            self.finished = True

    def _add(self, kind: str, content: str) -> None:
        assert self.epoch is not None
        self.last_seq += 1
        self.history[self.epoch].append(content)
        data = ev.dumps({"content": content}) if kind == "token" else "{}"
        event = Event(self.epoch, self.last_seq, kind, data)
        self.events.append(event)
        self.published.append(event)

    def trim(self, keep: int) -> None:
        """``MAXLEN``: only the last ``keep`` (≥ 1) events stay."""
        if len(self.events) > keep:
            self.events = self.events[-keep:]
            self.first_kept = self.events[0].seq

    def expire(self) -> None:
        if self.finished:
            self.events, self.expired = [], True

    def lose_last_writes(self, count: int) -> None:
        """Redis restarted from an AOF without its last writes (nothing published)."""
        if self.epoch is None or self.finished or count >= self.last_seq:
            return
        self.last_seq -= count
        self.events = [e for e in self.events if e.seq <= self.last_seq]
        self.frozen = True  # the worker's next append is refused: it begins again

    def lose_record(self) -> None:
        """Redis restarted empty; the worker that holds the job rebuilds the
        record (queued, no epoch) and begins again."""
        if self.finished:
            return
        self.record, self.epoch, self.events, self.last_seq = True, None, [], 0
        self.frozen = False

    # --- reads (atomic) -----------------------------------------------------------

    def page(self, read: Read) -> Page:
        if not self.record:
            return Page(None, read.after_seq, read.count, [])
        events = [e for e in self.events if e.seq > read.after_seq][:read.count]
        return Page(self.meta(), read.after_seq, read.count, events)

    def snapshot(self) -> Snapshot:
        epoch = self.epoch
        return Snapshot(self.meta(), self.text(epoch, self.last_seq) if epoch else "")


@dataclass
class Client:
    """What a client assembles, checked the way ``tokenwire.client.Transcript`` does."""

    world: World
    epoch: str | None = None
    seq: int = 0
    text: str = ""
    terminals: int = 0
    resets: int = 0

    def receive(self, event: Event) -> None:
        assert self.terminals == 0, f"{event} after the terminal event"
        if event.type == "reset":
            assert event.seq == 0
            self.epoch, self.seq, self.text = event.epoch, 0, ""
            self.resets += 1
            return
        if self.epoch is None:
            self.epoch = event.epoch  # the first epoch a fresh client sees needs no reset
        assert event.epoch == self.epoch, f"{event} spliced into epoch {self.epoch}"
        if event.type == "snapshot":
            assert event.seq > self.seq, f"snapshot {event.id} after {self.seq}"
            self.text = event.payload()["content"]
        else:
            assert event.seq == self.seq + 1, f"{event.id} after {self.epoch}.{self.seq}"
            self.text += event.payload().get("content", "")
            self.terminals += event.is_terminal
        self.seq = event.seq
        assert self.text == self.world.text(self.epoch, self.seq), "text differs from the epoch's"


class Run:
    """One interleaving: the world, the machine, and the live channel between them."""

    def __init__(self, rng: random.Random, cursor_from: World | None = None) -> None:
        self.rng = rng
        self.world = cursor_from or World()
        self.client = Client(self.world)
        cursor = None
        if cursor_from is not None and cursor_from.epoch is not None and rng.random() < 0.8:
            # A resuming client: a cursor it really received (or a stale/odd one).
            cursor = Cursor(cursor_from.epoch, rng.randint(0, cursor_from.last_seq + 2))
            self.client.epoch, self.client.seq = cursor.epoch, min(cursor.seq, cursor_from.last_seq)
            self.client.text = cursor_from.text(cursor.epoch, self.client.seq)
            if cursor.seq > cursor_from.last_seq and not cursor_from.finished:
                # It saw writes Redis lost: no append of that epoch follows.
                cursor_from.history[cursor.epoch] += ["?"] * (cursor.seq - cursor_from.last_seq)
                cursor_from.frozen = True
                self.client.seq = cursor.seq
                self.client.text = cursor_from.text(cursor.epoch, cursor.seq)
            elif cursor.seq >= cursor_from.last_seq:  # it has it all: the edge answers 204
                cursor = Cursor(cursor.epoch, cursor_from.last_seq - 1)
                self.client.seq = cursor.seq
                self.client.text = cursor_from.text(cursor.epoch, cursor.seq)
        self.position = Position(cursor, want_snapshot=rng.random() < 0.2)
        self.delivered = len(self.world.published)  # subscribed now: earlier messages are not ours
        self.gap_owed = False
        self.read: Read | None = None
        self.result: Page | Snapshot | None = None
        self.executed = False

    def emit(self, events: list[Event]) -> None:
        for event in events:
            self.client.receive(event)

    # --- the steps -------------------------------------------------------------------

    def deliver(self) -> None:
        if self.delivered < len(self.world.published):
            event = self.world.published[self.delivered]
            self.delivered += 1
            if self.position.live(event) is Live.SEND:
                self.client.receive(event)

    def drop(self) -> None:
        """A message lost on the way (reconnect, slot move): a gap signal will follow."""
        if self.delivered < len(self.world.published):
            self.delivered += 1
            self.gap_owed = True

    def lag(self) -> None:
        """A message the client could not take (its outbox was full)."""
        if self.delivered < len(self.world.published):
            self.delivered += 1
            self.position.gap()

    def signal_gap(self) -> None:
        self.gap_owed = False
        self.position.gap()

    def issue(self) -> None:
        if self.read is None:
            self.read = self.position.next_read()
            self.executed = False

    def execute(self) -> None:
        if self.read is not None and not self.executed:
            self.result = self.world.snapshot() if self.read.snapshot else self.world.page(
                Read(False, self.read.after_seq, PAGE))
            if not self.world.record:
                self.result = None if self.read.snapshot else self.result
            self.executed = True

    def complete(self) -> None:
        if self.read is None or not self.executed:
            return
        read, result = self.read, self.result
        self.read = None
        if read.snapshot:
            assert result is None or isinstance(result, Snapshot)
            self.emit(self.position.apply_snapshot(result))
        else:
            assert isinstance(result, Page)
            self.emit(self.position.apply_page(result))

    def step(self, choice: int, arg: int) -> None:
        world = self.world
        actions = (
            lambda: world.append(f"<{arg}>"), lambda: world.append(f"<{arg}>"),
            lambda: world.append("é\r\n" if arg % 2 else ""),
            self.deliver, self.deliver, self.deliver, self.deliver, self.drop, self.lag,
            self.signal_gap, self.issue, self.issue, self.execute, self.execute,
            self.complete, self.complete,
            lambda: world.trim(1 + arg % 5), world.begin, world.finish, world.expire,
            lambda: world.lose_last_writes(1 + arg % 3), world.lose_record,
            self.settle,  # level now, before any further append could reveal a hole
        )
        actions[choice % len(actions)]()
        if self.gap_owed and arg % 4 == 0:
            self.signal_gap()  # the source signals after the loss, sooner or later

    def settle(self) -> None:
        """Every message delivered, every owed gap signalled, every read done:
        the client must now be level — with no idle resync to help."""
        if self.world.frozen:
            self.world.begin()  # the worker's append was refused: it begins again
        while self.delivered < len(self.world.published):
            self.deliver()
        if self.gap_owed:
            self.signal_gap()
        if self.read is not None:
            self.execute()
            self.complete()
        for _ in range(20):
            self.issue()
            if self.read is None:
                break
            self.execute()
            self.complete()
        else:
            raise AssertionError("the machine keeps reading a quiet stream")
        self.check_level()

    def check_level(self) -> None:
        position, world, client = self.position, self.world, self.client
        assert position.level or position.ended
        assert position.seq == client.seq
        assert position.finished == (client.terminals == 1 or position.expired)
        assert client.epoch is None or position.epoch == client.epoch
        if position.expired:
            assert world.expired and client.terminals == 0
            return
        assert not position.missing  # the model's record comes back at once (rebuilt)
        if world.epoch is None:
            return  # queued (rebuilt): the client waits for its start
        assert client.epoch == world.epoch, (client.epoch, world.epoch)
        assert client.seq == world.last_seq, (client.seq, world.last_seq)
        assert client.terminals == (1 if world.finished else 0)


def prepared_world(rng: random.Random) -> World:
    """A stream with some history, for clients that resume."""
    world = World()
    world.begin()
    for index in range(rng.randint(0, 12)):
        world.append(f"[{index}]")
        if rng.random() < 0.1:
            world.begin()
    if rng.random() < 0.3:
        world.trim(rng.randint(1, 5))
    if rng.random() < 0.2:
        world.finish()
    world.published.clear()
    return world


@settings(max_examples=400, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(0, 22), st.integers(0, 30)), max_size=120),
       resume=st.booleans(), seed=st.integers(0, 2**32))
def test_any_interleaving_keeps_the_client_exact(steps: list[tuple[int, int]], resume: bool,
                                                 seed: int) -> None:
    """Shrinkable: a failure is reported as the shortest list of steps."""
    rng = random.Random(seed)
    run = Run(rng, prepared_world(rng) if resume else None)
    if not resume and rng.random() < 0.7:
        run.world.begin()
    for choice, arg in steps:
        run.step(choice, arg)
    run.settle()


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_long_random_runs_keep_the_client_exact(seed: int) -> None:
    """Many long runs (~10,000 steps each, a few hundred thousand per second):
    the combinations a short run cannot reach, such as many epochs with
    lagging, trimmed, resumed reads."""
    rng = random.Random(seed)
    for _ in range(10):
        run = Run(rng, prepared_world(rng) if rng.random() < 0.5 else None)
        run.world.begin()
        weights = [rng.random() for _ in range(23)]
        choices = rng.choices(range(23), weights, k=1000)
        for choice in choices:
            run.step(choice, rng.randint(0, 30))
        run.settle()


def test_a_resume_at_the_position_sends_only_what_follows() -> None:
    """The plain case, spelled out: cursor 2 of epoch e1 gets 3 and 4 from a
    page, then 5 live; a duplicate live 4 is skipped."""
    world = World()
    world.begin()
    for word in ("a", "b", "c"):
        world.append(word)
    position = Position(Cursor("e1", 2))
    read = position.next_read()
    assert read == Read(snapshot=False, after_seq=2)
    assert [e.seq for e in position.apply_page(world.page(read))] == [3, 4]
    assert position.level
    assert position.live(token("e1", 4, "c")) is Live.SKIP
    assert position.live(token("e1", 5, "d")) is Live.SEND
    assert position.live(token("e1", 7, "f")) is Live.RESYNC  # a hole: read the stream


def test_another_epoch_is_a_reset_then_the_epoch_from_its_start() -> None:
    world = World()
    world.begin()
    world.append("old")
    world.begin()
    world.append("new")
    position = Position(Cursor("e1", 2))
    read = position.next_read()
    assert read is not None
    first = position.apply_page(world.page(read))
    assert [(e.type, e.id) for e in first] == [("reset", "e2.0")]
    read = position.next_read()
    assert read is not None
    assert [e.id for e in position.apply_page(world.page(read))] == ["e2.1", "e2.2"]


def test_trimmed_history_is_a_reset_then_a_snapshot_then_the_rest() -> None:
    world = World()
    world.begin()
    for word in ("a", "b", "c", "d"):
        world.append(word)
    world.trim(2)
    position = Position(Cursor("e1", 1))
    emitted: list[Event] = []
    while (read := position.next_read()) is not None:
        emitted += (position.apply_snapshot(world.snapshot()) if read.snapshot
                    else position.apply_page(world.page(read)))
    assert [(e.type, e.id) for e in emitted] == [("reset", "e1.0"), ("snapshot", "e1.5")]
    assert emitted[1].payload() == {"content": "abcd"}
