"""The one rule for showing outside text to a person.

A traced process chooses its command name, its argv and the path it execs;
a recording's bytes and the Docker engine's names come from elsewhere too.
None of it may act on the terminal of the root user who reads it: every
character Python does not call printable -- C0 and C1 controls, DEL,
bidirectional overrides and other format characters, line and paragraph
separators, non-ASCII spaces, lone surrogates, unassigned code points --
is shown as a visible escape:

    \\n \\t \\r            newline, tab, carriage return
    \\xNN                  a character below U+0080, or a byte that is not UTF-8
                          (decoded with surrogateescape: U+DC80..U+DCFF)
    \\uNNNN, \\UNNNNNNNN    any other character

so U+009B (the C1 CSI, UTF-8 bytes c2 9b) shows as \\u009b and the lone
byte 9b as \\x9b.  Escaped text is printable, and escaping it again changes
nothing: a view may escape a field to measure its width and the line again
on its way out.  JSON keeps the exact text (see contract.py).
"""

from __future__ import annotations

from collections.abc import Callable

_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _char(c: str) -> str:
    code = ord(c)
    if c in _SHORT:
        return _SHORT[c]
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


# The characters a hostile name is made of -- C0, DEL, C1, non-ASCII spaces,
# zero-width and bidirectional format characters, separators, the BOM, and
# bytes that were not UTF-8 -- are escaped by one str.translate (C speed);
# the few other characters that are not printable (unassigned, private use,
# tags) one by one.
FAST = [*range(0x00, 0x20), *range(0x7F, 0xA1), 0xAD, 0x061C, 0x1680, 0x180E,
        *range(0x2000, 0x2010), *range(0x2028, 0x2030), *range(0x205F, 0x2070), 0x3000,
        0xFEFF, *range(0xFFF9, 0xFFFC), *range(0xDC80, 0xDD00)]


def escaping(one: Callable[[str], str]) -> Callable[[str], str]:
    """A function that replaces every character of a text that is not
    printable by one(character): the same rule for the views (escape, below)
    and for JSON (contract.json_safe), each with its own form of escape."""
    table = {code: one(chr(code)) for code in FAST if not chr(code).isprintable()}

    def apply(text: str) -> str:
        if text.isprintable():
            return text
        text = text.translate(table)
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else one(c) for c in text)

    return apply


escape = escaping(_char)
"""text with every character that is not printable as a visible escape."""


def escape_lines(text: str) -> str:
    """Several lines, each escaped: the newlines between them stay."""
    if text.isprintable():
        return text
    return "\n".join(escape(line) for line in text.split("\n"))
