"""Edits of nested state dicts for the 'one bad field' tables of the checkpoint and optimizer
tests: each returns a function that changes one field of a (deep-copied) state in place."""

from __future__ import annotations


def set_at(path, value):
    """Set ``state[path[0]]...[path[-1]]`` to ``value``, or to ``value(old)`` when it is callable."""

    def mutate(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return mutate


def delete_at(path):
    """Delete ``state[path[0]]...[path[-1]]``."""

    def mutate(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate
