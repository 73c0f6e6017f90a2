"""YAML loading with a bound on anchors and aliases, for every config fsslab reads (files, overrides, splits).

``yaml.safe_load`` composes aliases as shared references, so a "billion laughs" document (nine levels of ten
aliases each) loads in microseconds and explodes only later, when the value is copied, compared or written:
inside ``model.params`` that took 111 s and 5 GB before a MemoryError. :func:`load_yaml` composes the node
graph, counts the alias events and computes the size the document would have once every alias is expanded
(linear time, memoised per node), and refuses a document over :data:`MAX_EXPANDED_NODES` or with a recursive
alias before constructing any Python value.
"""

from __future__ import annotations

from typing import Any

import yaml

from fsslab.errors import ConfigError

MAX_ALIASES = 1_000  # alias events (``*name``) per document
MAX_EXPANDED_NODES = 100_000  # scalars + collections once every alias is expanded (a shipped config: < 300)


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that counts alias events while composing and stops past :data:`MAX_ALIASES`."""

    def __init__(self, stream: Any, source: str = "YAML") -> None:
        super().__init__(stream)
        self.aliases, self.source = 0, source

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(f"{self.source}: more than {MAX_ALIASES} YAML aliases (*name); fsslab refuses "
                                  "documents built to expand (a 'billion laughs'); write the values out")
        return super().compose_node(parent, index)


def expanded_size(node: yaml.Node, source: str = "YAML", limit: int = MAX_EXPANDED_NODES) -> int:
    """The number of nodes of ``node`` with every alias expanded, computed without expanding; raises
    ConfigError past ``limit`` or for a recursive alias."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(item: yaml.Node) -> int:
        key = id(item)
        if key in memo:
            return memo[key]
        if key in active:
            raise ConfigError(f"{source}: a YAML alias refers to a node that contains it (a recursive anchor)")
        active.add(key)
        total = 1
        if isinstance(item, yaml.SequenceNode):
            total += sum(size(child) for child in item.value)
        elif isinstance(item, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in item.value)
        active.discard(key)
        memo[key] = total
        if total > limit:
            raise ConfigError(f"{source}: its YAML anchors and aliases expand to more than {limit} values (a "
                              "'billion laughs' document?); fsslab refuses it: write the values out")
        return total

    try:
        return size(node)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply") from None


def load_yaml(text: str, source: str = "YAML") -> Any:
    """``yaml.safe_load(text)`` with anchors and aliases bounded (module docstring); YAML syntax errors raise
    ``yaml.YAMLError`` as before, the bounds ``ConfigError`` naming ``source``."""
    loader = BoundedSafeLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node, source)
        try:
            return loader.construct_document(node)
        except RecursionError:
            raise ConfigError(f"{source}: the YAML is nested too deeply") from None
    finally:
        loader.dispose()


__all__ = ["MAX_ALIASES", "MAX_EXPANDED_NODES", "BoundedSafeLoader", "expanded_size", "load_yaml"]
