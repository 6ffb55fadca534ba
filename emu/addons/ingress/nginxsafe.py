"""nginx.conf safety: quoting manifest-derived strings, and refusing a configuration that could reach host files.

Quoting follows ngx_conf_read_token (nginx src/core/ngx_conf_file.c): inside a double-quoted token `;`, `{`, `}`,
`#` and whitespace are plain characters and a backslash escapes the next one, so a value whose `\\` and `"` are
escaped can never end its directive.  Variables are still expanded inside quotes, so strings meant literally have
each `$` replaced by `${literal_dollar}`, as ingress-nginx's template does (template.go: escapeLiteralDollar, with
`geo $literal_dollar { default "$"; }` in nginx.tmpl).

`confine` is the last check before nginx (or `nginx -t`, which already opens the log files as root) sees a
configuration: it tokenises the text as nginx does and accepts only the directives emu renders, the unprivileged
worker `user`, and file paths (pid, logs, temp paths, certificates) that resolve inside the controller's directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from emu.errors import ClusterError

LAYER = "plan"

# Debian's base-passwd creates both on every machine; nginx's master (root, to bind 80/443) runs its workers as them.
WORKER_USER = "nobody"
WORKER_GROUP = "nogroup"
LITERAL_DOLLAR = "${literal_dollar}"

# Directives emu renders (emu.addons.ingress.nginxconf), by the block they may appear in.  Anything else (root, alias,
# include, load_module, *_by_lua*, env, working_directory, ...) is refused.
ALLOWED: dict[str, frozenset[str]] = {
    "main": frozenset({"user", "worker_processes", "pid", "events", "http", "error_log"}),
    "events": frozenset({"worker_connections", "multi_accept"}),
    "http": frozenset({"client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
                       "scgi_temp_path", "client_body_buffer_size", "client_max_body_size",
                       "proxy_max_temp_file_size", "default_type", "server_tokens", "server_name_in_redirect",
                       "port_in_redirect", "absolute_redirect", "sendfile", "keepalive_timeout", "log_format",
                       "access_log", "error_log", "map", "geo", "ssl_protocols", "ssl_session_cache",
                       "ssl_certificate", "ssl_certificate_key", "upstream", "server"}),
    "upstream": frozenset({"server"}),
    "server": frozenset({"server_name", "listen", "set", "location", "ssl_certificate", "ssl_certificate_key",
                         "access_log", "return"}),
    "location": frozenset({"set", "return", "if", "proxy_http_version", "proxy_set_header", "proxy_connect_timeout",
                           "proxy_next_upstream", "rewrite", "proxy_pass", "stub_status", "default_type",
                           "access_log", "location"}),
    "if": frozenset({"return"}),
}
PATH_ARG = {"pid", "error_log", "access_log", "client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
            "uwsgi_temp_path", "scgi_temp_path", "ssl_certificate", "ssl_certificate_key"}
SOCKET_ARG = {"listen", "proxy_pass", "server"}  # `unix:/path` would bind or reach a host socket file
TABLE_BLOCKS = ("map", "geo")  # their bodies are `key value;` pairs, not directives


class UnsafeConfig(ClusterError):
    """A rendered nginx.conf that could reach outside the controller's directory: emu's bug, never the user's."""


def quote(s: str) -> str:
    """One nginx token holding `s` (variables in it are still expanded)."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(s: str) -> str:
    """One nginx token holding `s` exactly: `$` is not a variable (needs the `$literal_dollar` geo block)."""
    return quote(s.replace("$", LITERAL_DOLLAR))


@dataclass(frozen=True, slots=True)
class Statement:
    words: tuple[str, ...]  # unquoted, as nginx sees them
    block: str  # the enclosing block's directive ("main" at the top)
    opens: bool  # ends with `{`


def statements(text: str) -> list[Statement]:
    """The directives of `text` as ngx_conf_read_token splits them: at the start of a word `#` opens a comment,
    quotes a quoted word, `}` closes a block; inside a word only whitespace, `;` and `{` (not right after `$`) end
    it; a backslash takes the next character as it is."""
    out: list[Statement] = []
    stack = ["main"]
    words: list[str] = []
    i, n = 0, len(text)

    def close(ch: str) -> None:
        nonlocal words
        if not words:
            raise UnsafeConfig(f"nginx.conf: unexpected {ch!r}")
        out.append(Statement(tuple(words), stack[-1], ch == "{"))
        if ch == "{":
            stack.append(words[0])
        words = []

    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == "}":
            if words or len(stack) == 1:
                raise UnsafeConfig("nginx.conf: unexpected '}'")
            stack.pop()
            i += 1
        elif ch in ";{":
            close(ch)
            i += 1
        elif ch in "\"'":
            j, buf = i + 1, []
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise UnsafeConfig("nginx.conf: unterminated quoted string")
            words.append("".join(buf))
            i = j + 1
        else:
            buf = []
            while i < n and text[i] not in " \t\r\n;" and not (text[i] == "{" and (not buf or buf[-1] != "$")):
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                buf.append(text[i])
                i += 1
            words.append("".join(buf))
    if words or len(stack) != 1:
        raise UnsafeConfig("nginx.conf: unexpected end of file")
    return out


def _inside(path: str, directory: str) -> bool:
    if not os.path.isabs(path) or "$" in path:
        return False
    top = os.path.realpath(directory)
    return os.path.commonpath([os.path.realpath(path), top]) == top


def confine(text: str, directory: str) -> None:
    """Raise UnsafeConfig unless every directive of `text` is one emu renders, in its place, with the unprivileged
    worker user and every file path inside `directory` (after resolving symlinks)."""
    for st in statements(text):
        name, args = st.words[0], st.words[1:]
        if st.block in TABLE_BLOCKS:
            if st.opens or len(st.words) != 2 or name in ("include", "hostnames", "volatile"):
                raise UnsafeConfig(f"nginx.conf: {' '.join(st.words)!r} is not a {st.block} entry emu renders")
            continue
        if name not in ALLOWED.get(st.block, frozenset()):
            raise UnsafeConfig(f"nginx.conf: directive {name!r} is not allowed in {st.block} by emu")
        if name == "user" and tuple(args) != (WORKER_USER, WORKER_GROUP):
            raise UnsafeConfig(f"nginx.conf: workers must run as {WORKER_USER} {WORKER_GROUP}, not {args}")
        if name in SOCKET_ARG and any("unix:" in a for a in args):
            raise UnsafeConfig(f"nginx.conf: {name} {' '.join(args)!r} names a unix socket")
        if name in PATH_ARG and args and not (name == "access_log" and args[0] == "off"):
            if not _inside(args[0], directory):
                raise UnsafeConfig(f"nginx.conf: {name} {args[0]!r} is outside the controller's directory "
                                   f"{directory}")
