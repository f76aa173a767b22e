"""Reading YAML that a person hands us (lab files, manifests, API bodies), defensively.

Owns the rules every input file shares: a size limit read in bounded chunks (so `-f
/dev/zero` is refused, not read into memory), UTF-8 text only, a YAML loader that refuses
duplicate mapping keys (a second `name:` silently winning brought up the wrong lab) and
alias bombs, and `short()`, which keeps a value quoted in an error line readable. Every
failure is a UsageError of one line naming the source; nothing here touches the lab.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from netlab.errors import UsageError

MAX_BYTES = 1 << 20  # 1 MiB, the API server's request limit too (kube-apiserver: 3 MiB)
MAX_NODES = 200_000  # a document expanding (through *aliases) to more nodes is a bomb, not a lab
MAX_DEPTH = 200  # deeper nesting than any manifest needs; deeper would hit Python's stack


def short(value: Any, limit: int = 60) -> str:
    """repr() of a value, cut to `limit` characters with its length said: error lines stay one
    readable line even when the value is 10 MB."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape", "backslashreplace").decode("ascii")  # one line, printable
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def read_bounded(stream: BinaryIO, source: str, limit: int = MAX_BYTES) -> bytes:
    chunks, total = [], 0
    while total <= limit:
        chunk = stream.read(min(65536, limit + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > limit:
        raise UsageError(f"{source}: larger than {limit // 1024} KiB; not a lab file or manifest")
    return b"".join(chunks)


def decode(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{source}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
                         "is it a binary file?") from None
    if "\x00" in text:
        raise UsageError(f"{source}: contains a NUL byte at offset {text.index(chr(0))}; is it a binary file?")
    return text.removeprefix("\ufeff")


def read_file(path: str, flag: str = "-f") -> str:
    """The text of `path` ('-' is stdin) for a `flag` argument, bounded and checked."""
    if path == "-":
        return decode(read_bounded(sys.stdin.buffer, "<stdin>"), "<stdin>")
    p = Path(path)
    try:
        if p.is_dir():
            raise UsageError(f"{flag} {short(path)}: is a directory")
        with p.open("rb") as f:
            return decode(read_bounded(f, path), path)
    except OSError as e:
        raise UsageError(f"{flag} {short(path)}: {e.strerror}") from None


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, alias bombs and absurd nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_document(self):
        node = super().compose_document()
        sizes: dict[int, int] = {}

        def size(n) -> int:  # nodes after expanding aliases; shared nodes are measured once
            if id(n) not in sizes:
                sizes[id(n)] = 1  # a cycle (a recursive alias) counts once
                kids = n.value if isinstance(n, yaml.SequenceNode) else \
                    [x for kv in n.value for x in kv] if isinstance(n, yaml.MappingNode) else []
                sizes[id(n)] = min(MAX_NODES + 1, 1 + sum(size(k) for k in kids))
            return sizes[id(n)]

        if node is not None and size(node) > MAX_NODES:
            raise yaml.constructor.ConstructorError(
                None, None, f"expands to more than {MAX_NODES} values through *aliases", node.start_mark)
        return node

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                ev = self.peek_event()
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", ev.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            # Before the base class flattens merge keys (<<), which may legitimately repeat a key.
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class reports it
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {short(key)} (first at line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _error(e: Exception, source: str) -> UsageError:
    mark = getattr(e, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark else ""
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
    return UsageError(f"{source}: not valid YAML{where}: {short(str(problem), 120)}")


def load_all(text: str, source: str) -> list[Any]:
    """Every document of a YAML text; UsageError (one line, naming `source`) if it is not YAML."""
    try:
        return list(yaml.load_all(text, Loader=StrictLoader))
    except yaml.YAMLError as e:
        raise _error(e, source) from None
    except RecursionError:
        raise UsageError(f"{source}: not valid YAML: nested too deeply") from None


def load_one(text: str, source: str) -> Any:
    docs = load_all(text, source)
    if len(docs) > 1:
        raise UsageError(f"{source}: expected one YAML document, found {len(docs)}")
    return docs[0] if docs else None
