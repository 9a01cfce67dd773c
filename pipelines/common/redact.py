"""Keep credentials out of messages and files: mask passwords in text, drop them from URIs.

Two kinds of secret are recognised, wherever they appear in a string:
- the password of a URL's user info, `scheme://user:PASSWORD@host...` (database URLs, http(s)
  basic auth); and
- the value of a password-like key, `password=...` in a query string or a libpq conninfo
  (`password`, `passwd`, `pwd`, and names ending in them such as `PGPASSWORD`; also `secret`,
  `token` and `api_key`).

The rules are deliberately greedy: a password runs to the *last* `@` before the next whitespace,
since SQLAlchemy accepts unencoded `/`, `:` and `@`-free text there. When in doubt more is masked
(a later `@` in the same word, e.g. an e-mail address in a path, hides the host too), never less.
Not recognised: a URL password holding raw whitespace (percent-encode it), JSON-style
`"password": "..."` pairs.
"""

from __future__ import annotations

import re

MASK = "***"

# scheme "://" user ":" password "@". The user may hold "@" (user@tenant) but no brackets, so an
# IPv6 host without credentials ("http://[::1]:5000") never looks like user:password.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:/\[\]]*):(?P<password>\S*)@"
)
_KEY = r"(?P<key>\b[\w.\-]*(?:password|passwd|pwd|secret|token|api_key))"
# A quoted value (libpq: 'it\'s' or 'it''s') or a bare one up to a query/conninfo separator.
_VALUE = r"(?P<value>'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"|[^&;\s]*)"
_PARAM = re.compile(_KEY + r"(?P<eq>\s*=\s*)" + _VALUE, re.IGNORECASE)
# For removal: the parameter with the separator before it ("&", ";" or the blanks of a conninfo).
_PARAM_AND_SEP = re.compile(r"(?:[&;]|\s+)?" + _PARAM.pattern, re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL password and password-like parameter value replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", str(text))
    return _PARAM.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def public_uri(uri: str) -> str:
    """`uri` without its password, for storage: `user:PASS@host` -> `user@host`,
    `:PASS@host` -> `host`, and password-like parameters removed (query string or conninfo)."""

    def drop_userinfo(m: re.Match[str]) -> str:
        return f"{m['scheme']}{m['user']}@" if m["user"] else m["scheme"]

    uri = _USERINFO.sub(drop_userinfo, str(uri))
    uri = _PARAM_AND_SEP.sub("", uri)
    # A removed first parameter leaves "?&b=1", a removed only one leaves "db?" or "db?#frag".
    uri = re.sub(r"\?[&;]", "?", uri)
    uri = re.sub(r"\?(?=#|$)", "", uri)
    return uri.strip()
