"""Formats the greeting; kept apart from hello.py so an edit touches one module."""


def render(doc, system):
    return f"{doc['greeting']} from {doc['from']} (Python on {system})"
