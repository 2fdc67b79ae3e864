"""Resource limits: a hostile or broken file is rejected with a reason, never let loose.

Anyone who can write to a watched folder or bucket can drop a file, so before a file is
parsed its size is checked, and a compressed file's decompressed size is counted (in
bounded memory, stopping at the limit) so that a "zip bomb" is refused rather than inflated.
The limits are per dataset (contract keys), with defaults safe for a 2-core worker.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from hopper.contracts.model import Contract
from hopper.contracts.read import compression_of
from hopper.errors import TerminalError, UnreadableFileError

_CHUNK = 4 << 20


def check_file_limits(path: Path, contract: Contract, *, source: str | None = None) -> None:
    """Reject a file that is too large, or that decompresses to too much.

    Raises:
        TerminalError: the file exceeds ``max_file_mb`` or its decompressed size exceeds
            ``max_decompression_ratio`` × its size (and ``max_file_mb``).
    """
    name = source or str(path)
    size = path.stat().st_size
    limit = int(contract.max_file_mb * (1 << 20))
    if size > limit:
        raise TerminalError(
            f"{name}: the file is {size / (1 << 20):.0f} MB, over the dataset's limit of "
            f"{contract.max_file_mb:g} MB (max_file_mb). Split it, or raise max_file_mb in "
            "the contract, then replay it."
        )
    codec = compression_of(path)
    if codec is None:
        return
    allowed = min(limit, max(size, 1) * contract.max_decompression_ratio)
    seen = 0
    try:
        with pa.input_stream(str(path), compression=codec) as stream:
            while chunk := stream.read(_CHUNK):
                seen += len(chunk)
                if seen > allowed:
                    raise TerminalError(
                        f"{name}: the {codec} file decompresses to more than "
                        f"{allowed / (1 << 20):.0f} MB ({contract.max_decompression_ratio:g}× "
                        "its size or max_file_mb): refused as a possible decompression bomb. "
                        "Raise max_decompression_ratio in the contract if the data is genuine."
                    )
    except (OSError, pa.ArrowInvalid) as exc:
        raise UnreadableFileError(f"{name}: cannot decompress ({codec}): {exc}") from exc


def check_table_limits(num_columns: int, contract: Contract, *, source: str) -> None:
    """Reject a file with more columns than ``max_columns``.

    Raises:
        TerminalError: naming the count and the limit.
    """
    if num_columns > contract.max_columns:
        raise TerminalError(
            f"{source}: {num_columns} columns, over the dataset's limit of "
            f"{contract.max_columns} (max_columns). Check the delimiter, or raise the limit."
        )
