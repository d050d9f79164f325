"""The doorbell protocol on a model of x86-64 memory: no schedule loses a wake-up.

Threads on x86-64 (TSO) see their own stores at once, while other threads see them only when the
store buffer drains, in order. A fence (and a futex call, which takes a locked kernel lock) waits
for the buffer to drain. The model runs the exact steps of `Ring._put` (producer) and
`wait_for_records` (consumer), one shared-memory access per step. Hypothesis draws the
interleaving, including when each store buffer drains. It is a model, so each step below names
the line of code it stands for; the two mutants show that the model would catch a missing fence
or a wrong order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

WRITE, READ, ASLEEP, BELL = "write", "read", "asleep", "bell"


@dataclass
class _Thread:
    program: list
    pc: int = 0
    regs: dict = field(default_factory=dict)
    buffer: list = field(default_factory=list)  # pending stores, oldest first
    blocked_on: str | None = None

    @property
    def done(self) -> bool:
        return self.pc >= len(self.program)


class _Machine:
    def __init__(self, producer: list, consumer: list):
        self.memory = {WRITE: 0, READ: 0, ASLEEP: 0, BELL: 0}
        self.threads = {"p": _Thread(producer), "c": _Thread(consumer)}

    def load(self, t: _Thread, addr: str) -> int:
        for a, v in reversed(t.buffer):  # store forwarding: a thread sees its own stores
            if a == addr:
                return v
        return self.memory[addr]

    def actions(self) -> list[tuple[str, str]]:
        """What may happen next: a thread's next step, or the oldest store of a buffer draining."""
        out = []
        for name, t in self.threads.items():
            if t.buffer:
                out.append(("drain", name))
            if t.done or t.blocked_on is not None:
                continue
            op = t.program[t.pc][0]
            if op in ("fence", "futex_wait", "futex_wake") and t.buffer:
                continue  # a fence or a locked kernel operation waits for the buffer to drain
            out.append(("step", name))
        return out

    def drain(self, name: str) -> None:
        addr, value = self.threads[name].buffer.pop(0)
        self.memory[addr] = value

    def step(self, name: str) -> None:
        t = self.threads[name]
        op, *args = t.program[t.pc]
        t.pc += 1
        if op == "store":
            addr, value = args
            t.buffer.append((addr, value(t.regs) if callable(value) else value))
        elif op == "load":
            reg, addr = args
            t.regs[reg] = self.load(t, addr)
        elif op == "fence":
            pass
        elif op == "return_if":
            if args[0](t.regs):
                t.pc = len(t.program)
        elif op == "futex_wait":  # the kernel compares and queues atomically
            addr, reg = args
            if self.memory[addr] == t.regs[reg]:
                t.blocked_on = addr
        elif op == "futex_wake":
            for other in self.threads.values():
                if other.blocked_on == args[0]:
                    other.blocked_on = None

    def run(self, choices: list[int]) -> None:
        i = 0
        while actions := self.actions():
            kind, name = actions[choices[i % len(choices)] % len(actions)] if choices else actions[0]
            i += 1
            self.drain(name) if kind == "drain" else self.step(name)

    def lost_wake_up(self) -> bool:
        """The consumer sleeps while a record it has not read waits."""
        return self.threads["c"].blocked_on is not None and self.memory[WRITE] != self.memory[READ]


# `Ring._put` after the copy: store the write position, fence, read the flag, ring if it is up.
PRODUCER = [
    ("store", WRITE, 1),  # h[_W_WRITE] = write + k
    ("fence",),  # fence()
    ("load", "asleep", ASLEEP),  # if h[_W_ASLEEP]:
    ("return_if", lambda r: not r["asleep"]),
    ("load", "bell", BELL),  # h[_W_BELL] = h[_W_BELL] + 1
    ("store", BELL, lambda r: r["bell"] + 1),
    ("futex_wake", BELL),  # futex_wake(self._bell)
]

# `wait_for_records` for one ring.
CONSUMER = [
    ("load", "bell", BELL),  # words.append((ring._bell, h[_W_BELL]))
    ("store", ASLEEP, 1),  # h[_W_ASLEEP] = 1
    ("fence",),  # fence()
    ("load", "write", WRITE),  # if ring._h[_W_WRITE] != ring._h[_W_READ]: return
    ("load", "read", READ),
    ("return_if", lambda r: r["write"] != r["read"]),
    ("futex_wait", BELL, "bell"),  # futex_wait_any(words, timeout)
]

_schedules = st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(choices=_schedules)
def test_no_schedule_loses_a_wake_up(choices):
    machine = _Machine(PRODUCER, CONSUMER)
    machine.run(choices)
    assert not machine.lost_wake_up()


def _some_schedule_loses_a_wake_up(producer: list, consumer: list) -> bool:
    """Exhaustive: every interleaving of the two programs' steps and their buffers' drains."""
    def explore(machine_choices: list[int]) -> bool:
        machine = _Machine(producer, consumer)
        for c in machine_choices:
            actions = machine.actions()
            kind, name = actions[c]
            machine.drain(name) if kind == "drain" else machine.step(name)
        actions = machine.actions()
        if not actions:
            return machine.lost_wake_up()
        return any(explore([*machine_choices, c]) for c in range(len(actions)))

    return explore([])


def test_the_real_protocol_is_exhaustively_safe():
    assert not _some_schedule_loses_a_wake_up(PRODUCER, CONSUMER)


def test_the_model_catches_a_missing_fence_and_a_late_bell_read():
    """Mutants the model must reject: without either fence a load passes the store before it
    (the store buffer); reading the bell after the look lets a ring slip in between."""
    assert _some_schedule_loses_a_wake_up([s for s in PRODUCER if s[0] != "fence"], CONSUMER)
    assert _some_schedule_loses_a_wake_up(PRODUCER, [s for s in CONSUMER if s[0] != "fence"])
    late_bell = [*CONSUMER[1:6], CONSUMER[0], CONSUMER[6]]
    assert _some_schedule_loses_a_wake_up(PRODUCER, late_bell)
