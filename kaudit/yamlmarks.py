"""YAML with line numbers, for input files a user writes (rule files).

PyYAML's composed node tree keeps where each key and value starts, so a
schema error can name the line of the offending key. Aliases are refused
beyond a tiny bound (an alias bomb fails at once instead of growing without
end), and a key given twice in one mapping is an error rather than the
silent last-wins of plain `yaml.safe_load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

MAX_ALIASES = 8
MAX_DEPTH = 32  # nesting of collections: a rule file needs four


class YamlError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML was built with it


def _check_shape(text: str) -> None:
    """Refuse alias bombs and deep nesting from the event stream, before a
    node tree is composed (PyYAML composes recursively: deep nesting would
    end in RecursionError)."""
    aliases = depth = 0
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise YamlError(line, f"more than {MAX_ALIASES} YAML aliases")
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlError(line, f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _no_duplicate_keys(node: yaml.Node) -> None:
    stack = [node]
    seen_nodes: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen_nodes:  # an alias points back at a node already checked
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            keys: set[object] = set()
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise YamlError(_line(key), f"key {key.value!r} given twice")
                    keys.add(key.value)
                stack += [key, value]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value


@dataclass(frozen=True)
class Document:
    data: Any
    root: yaml.Node

    def node_at(self, path: Sequence[str | int]) -> yaml.Node:
        """The node a data path (mapping keys, sequence indexes) leads to, or the deepest one on the way."""
        node = self.root
        for step in path:
            if isinstance(node, yaml.MappingNode):
                found = next((v for k, v in node.value if k.value == step), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                found = node.value[step]
            else:
                found = None
            if found is None:
                break
            node = found
        return node

    def line(self, path: Sequence[str | int]) -> int:
        return _line(self.node_at(path))

    def key_line(self, path: Sequence[str | int], key: object) -> int:
        """The line of `key` itself in the mapping at path."""
        node = self.node_at(path)
        if isinstance(node, yaml.MappingNode):
            for k, _ in node.value:
                if k.value == key:
                    return _line(k)
        return _line(node)


def load(text: str) -> Document:
    """One YAML document, with its node tree; YamlError names the line of any problem."""
    loader = _LOADER(text)
    try:
        _check_shape(text)
        root = loader.get_single_node()
        if root is None:
            raise YamlError(1, "empty document")
        _no_duplicate_keys(root)
        return Document(loader.construct_document(root), root)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "invalid YAML"
        if "maximum nesting depth" in problem:  # libyaml's own bound (1000), met before any event past ours
            problem = f"nested deeper than {MAX_DEPTH} levels"
        raise YamlError(mark.line + 1 if mark else 1, problem) from err
    except yaml.YAMLError as err:
        raise YamlError(1, str(err)) from err
    finally:
        loader.dispose()
