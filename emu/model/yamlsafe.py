"""Reading a manifest file safely: a bounded read of a regular file, then YAML with goyaml's alias budget and the API
server's refusal of duplicate keys, every problem one ValidationError line naming the file.

kubectl reads `-f FILE` whole and decodes it with sigs.k8s.io/yaml, which uses goyaml (gopkg.in/yaml.v2, decode.go).
Since the fix for CVE-2019-11253 ("billion laughs" against kube-apiserver) goyaml counts every node it decodes and
every node decoded inside an alias expansion, and fails with `document contains excessive aliasing` once more than
100 alias-expanded nodes and 1000 nodes in all were decoded and the alias share passes allowedAliasRatio: 99% up to
400,000 nodes, falling linearly to 10% at 4,000,000.  PyYAML shares one Python object per anchor, so loading is cheap,
but everything that walks the result afterwards (json.dumps of a pod template, the schema walk) pays the expansion;
we apply goyaml's rule to the composed node graph before constructing anything, in time linear in the file.
Duplicate keys: the API server's strict decoding reports them (`duplicate field "kind"`, k8s.io/apimachinery
pkg/runtime/serializer/json); PyYAML keeps the last value silently.
"""
from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from emu.errors import Problem, ValidationError

MAX_FILE_BYTES = 16 * 1024 * 1024  # a manifest larger than this is a mistake (the API server's own limit is 3 MiB)
ALIAS_RATIO_LOW, ALIAS_RATIO_HIGH = 400_000, 4_000_000  # goyaml's alias_ratio_range_low / _high
MERGE_TAG = "tag:yaml.org,2002:merge"
_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: 8x faster


def printable(text: str) -> str:
    """text with every non-printable character (newline, NUL, ...) written as its Python escape: a name or key
    from a manifest in a problem keeps the problem on one line."""
    return text if text.isprintable() else "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _fail(path: str, msg: str, document: int | None = None, fld: str = "", obj: str = "") -> ValidationError:
    return ValidationError([Problem(printable(path), document, printable(obj), printable(fld), printable(msg))])


def read_text(path: str, limit: int = MAX_FILE_BYTES) -> str:
    """The file's text: a regular file of at most `limit` bytes of UTF-8.

    The type and size are checked with fstat on the descriptor we read from (no window between a check and the
    open), the open does not block on a FIFO with no writer (O_NONBLOCK), and at most limit+1 bytes are read, so
    /dev/zero, a FIFO, a directory or a huge file cost nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise _fail(path, f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) \
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
            raise _fail(path, f"cannot read: {what}, not a regular file")
        if st.st_size > limit:
            raise _fail(path, f"cannot read: {st.st_size} bytes, more than the {limit}-byte limit")
        chunks, size = [], 0
        while size <= limit:  # st_size may lie (a file still growing, /proc): the read itself is bounded too
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise _fail(path, f"cannot read: more than the {limit}-byte limit")
    except OSError as e:
        raise _fail(path, f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise _fail(path, f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from None


def allowed_alias_ratio(decoded: int) -> float:
    """goyaml's allowedAliasRatio: the share of decoded nodes that may come from alias expansion."""
    if decoded <= ALIAS_RATIO_LOW:
        return 0.99
    if decoded >= ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - ALIAS_RATIO_LOW) / (ALIAS_RATIO_HIGH - ALIAS_RATIO_LOW)


def _excessive(decoded: int, aliased: int) -> bool:
    return aliased > 100 and decoded > 1000 and aliased / decoded > allowed_alias_ratio(decoded)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def _expanded_sizes(root: yaml.Node) -> dict[int, int]:
    """id(node) -> how many nodes decoding it visits with every alias expanded (iterative: no recursion limit)."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        if done:
            size[id(node)] = 1 + sum(size.get(id(c), 0) for c in _children(node))
            continue
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size


def _key_text(node: yaml.Node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def check_node(root: yaml.Node) -> tuple[str, str] | None:
    """(field, message) for the first problem of a composed document, or None: goyaml's alias budget (counted in
    document order, checked after each alias expansion, where the alias share peaks) and duplicate mapping keys
    (merge keys `<<` excepted: an explicit key may override a merged one, as in goyaml)."""
    sizes = _expanded_sizes(root)
    seen: set[int] = set()
    decoded = aliased = 0
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # a second visit of the same object is an alias (PyYAML shares anchored nodes)
            decoded += sizes[id(node)]
            aliased += sizes[id(node)]
            if _excessive(decoded, aliased):
                return "", (f"document contains excessive aliasing ({aliased} of {decoded} nodes come from alias "
                            f"expansion), as goyaml refuses it for kubectl and the API server")
            continue
        seen.add(id(node))
        decoded += 1
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            items = []
            for k, v in node.value:
                name = _key_text(k)
                if name is not None and k.tag != MERGE_TAG:
                    child = f"{path}.{name}" if path else name
                    if name in keys:
                        return child, f'line {k.start_mark.line + 1}: duplicate field "{name}"'
                    keys.add(name)
                else:
                    child = path
                items.append((k, child))
                items.append((v, child))
            stack.extend(reversed(items))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(reversed([(c, f"{path}[{i}]") for i, c in enumerate(node.value)]))
    return None


def _label(root: yaml.Node) -> str:
    """`Kind ns/name` read from the composed node, for a problem found before the document is constructed."""
    def get(node: yaml.Node, key: str) -> yaml.Node | None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if _key_text(k) == key:
                    return v
        return None

    def text(node: yaml.Node | None) -> str:
        return node.value if isinstance(node, yaml.ScalarNode) and isinstance(node.value, str) else ""

    meta = get(root, "metadata")
    kind, ns, name = text(get(root, "kind")), text(get(meta, "namespace")), text(get(meta, "name"))
    return f"{kind or '<no kind>'} {ns + '/' if ns else ''}{name or '<unnamed>'}"


def load_all(path: str, text: str) -> list[Any]:
    """Every document of `text` (None for an empty one, keeping the numbering), each checked by check_node before
    it is constructed.  Raises ValidationError naming the file, the document and, where there is one, the field."""
    loader = _BASE(text)
    out: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            index = len(out) + 1
            problem = check_node(node) if node is not None else None
            if problem:
                raise _fail(path, problem[1], index, problem[0], _label(node))
            out.append(loader.construct_document(node) if node is not None else None)
    except yaml.reader.ReaderError as e:  # a character YAML does not allow (NUL, other control characters)
        line = text.count("\n", 0, e.position) + 1
        raise _fail(path, f"line {line}: invalid YAML: {e.reason} (#x{e.character:04x})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _fail(path, f"{where}invalid YAML: {what}") from None
    except RecursionError:
        raise _fail(path, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return out
