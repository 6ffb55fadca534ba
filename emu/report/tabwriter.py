"""Go's text/tabwriter as kubectl configures it for `describe` (minwidth 0, tabwidth 8, padding 2, padchar ' ', no
flags), behind kubectl's PrefixWriter (two spaces of indent per level).

Cells are tab-terminated: the text after a line's last tab belongs to no column and is never padded.  A column's
width is set per block of consecutive lines that all have a cell in that column, so a line without a tab
("Containers:", "IPs:") ends every block and the lines after it are aligned on their own; that is why kubectl's
`IPs:` is followed by `  IP:  10.244.0.3` while `Name:` sits in a wide column above it."""
from __future__ import annotations


def tabwrite(text: str, padding: int = 2) -> str:
    """Align `text` as text/tabwriter's Flush does (tabwriter.go: Writer.format, column by column, recursively)."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []

    def emit(first: int, last: int, widths: list[int]) -> None:
        for cells in lines[first:last]:
            out.append("".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(cells)))

    def fmt(first: int, last: int, widths: list[int]) -> None:
        column, this = len(widths), first
        while this < last:
            if column >= len(lines[this]) - 1:  # no cell in this column on this line
                this += 1
                continue
            emit(first, this, widths)
            first, width = this, 0
            while this < last and column < len(lines[this]) - 1:  # the column block
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            fmt(first, this, widths + [width])  # the columns to its right, within the block
            first = this
        emit(first, last, widths)

    fmt(0, len(lines), [])
    return "\n".join(out)


class Writer:
    """kubectl's PrefixWriter over a tabwriter: `write(level, text)` buffers, `flush` formats what is buffered
    (DescribeEvents flushes before its table, so the table is aligned on its own)."""

    def __init__(self) -> None:
        self._buf: list[str] = []
        self._done: list[str] = []

    def write(self, level: int, text: str) -> None:
        self._buf.append("  " * level + text)

    def flush(self) -> None:
        if self._buf:
            self._done.append(tabwrite("".join(self._buf)))
            self._buf = []

    def text(self) -> str:
        self.flush()
        return "".join(self._done)
