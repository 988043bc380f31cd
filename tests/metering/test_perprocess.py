"""Metering's per-process objects: a forked worker makes its own and leaves its parent's alone."""

from __future__ import annotations

import os

from sqlalchemy import create_engine

from silk.metering import perprocess
from silk.metering.perprocess import PerProcess


class Thing:
    """Something holding a connection, that notes when it is closed."""

    def __init__(self, engine):
        self.engine = engine
        self.closed = False

    def close(self):
        self.closed = True


def test_one_object_per_process_and_a_parents_is_never_closed(monkeypatch, tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    things = PerProcess(Thing, Thing.close)
    parents = things.get(engine)
    assert things.get(engine) is parents  # same process: the same object

    child_pid = os.getpid() + 1
    monkeypatch.setattr(perprocess.os, "getpid", lambda: child_pid)  # as in a forked worker
    childs = things.get(engine)
    assert childs is not parents and things.get(engine) is childs

    engine.dispose()
    assert childs.closed and not parents.closed
