"""Text encodings: what a byte-order mark says, and what Arrow's readers are given.

Arrow decodes UTF-8 natively; any other encoding a contract names is either handed to Arrow's
CSV reader by its codec name or transcoded to UTF-8 on the way in. A file whose byte-order mark
contradicts the contract's encoding is refused before it is read, with the encoding to set.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from hopper.contracts.model import ReaderOptions

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def bom_encoding(head: bytes) -> str | None:
    """``utf-16`` or ``utf-32`` when ``head`` starts with that byte-order mark, else None.

    Spreadsheets save "Unicode text" as UTF-16 with a BOM; UTF-8's own BOM needs nothing.
    """
    return next((name for bom, name in _BOMS if head.startswith(bom)), None)


def encoding_mismatch(head: bytes, reader: ReaderOptions) -> str | None:
    """Why a file cannot be decoded with the reader's encoding, when its BOM says so."""
    found = bom_encoding(head)
    if found is None or codecs.lookup(reader.encoding).name.startswith(found):
        return None
    return (
        f"the file is {found.upper()} text (it starts with a {found.upper()} byte-order mark) "
        f"but the contract reads it as {reader.encoding}. Fix: set reader.encoding: {found} "
        "in the contract, or re-send the file as UTF-8"
    )


def arrow_encoding(encoding: str) -> str:
    """The codec name Arrow's CSV reader is given: ``utf8`` for any spelling of UTF-8."""
    # Arrow decodes UTF-8 natively (and skips a BOM); Python codecs would keep the BOM.
    name = codecs.lookup(encoding).name
    return "utf8" if name in ("utf-8", "utf-8-sig") else name


def utf8_transcoder(encoding: str) -> Callable[[bytes, bool], bytes] | None:
    """An incremental transcoder from ``encoding`` to the UTF-8 bytes Arrow's readers see.

    Returns:
        ``transcode(chunk, final) -> bytes``, or None when the encoding is UTF-8 already.
        Bytes that do not decode become U+FFFD (the read itself says they are wrong).
    """
    if arrow_encoding(encoding) == "utf8":
        return None
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def transcode(chunk: bytes, final: bool) -> bytes:
        return decoder.decode(chunk, final).encode("utf-8", errors="replace")

    return transcode
