"""The pydantic models that cross Hopper's boundaries: watcher → event → flow → ledger.

One :class:`FileRef` describes a file whether it lives on disk or in S3; the watcher produces
it, the ``hopper.file.detected`` event carries it, the flow receives it inside an
:class:`IngestRequest`, and the ledger keys on ``(uri, fingerprint)``.
"""

from __future__ import annotations

import os
import unicodedata
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hopper.config import check_dataset_name

FILE_SCHEME = "file://"


def file_uri(path: str | os.PathLike[str]) -> str:
    """The ``file://`` URI of an absolute local path, faithful to its bytes.

    The path's bytes (``os.fsencode``: a name that is not valid UTF-8 keeps its raw bytes
    through Python's surrogate escapes) are percent-encoded, so any name — Latin-1, with
    ``%``, ``#``, ``?``, newlines — has exactly one URI and :func:`path_of_file_uri` gives
    the very same bytes back. This is what ``Path.as_uri`` does on POSIX; it is spelled out
    here so that producers and parsers of the URI agree by construction.

    Raises:
        ValueError: the path is relative.
    """
    raw = os.fsencode(path)
    if not raw.startswith(b"/"):
        raise ValueError(f"{os.fsdecode(raw)!r} is not an absolute path")
    return FILE_SCHEME + quote_from_bytes(raw, safe="/")


def path_of_file_uri(uri: str) -> Path:
    """The local path of a ``file://`` URI: the inverse of :func:`file_uri`.

    Percent-escapes are decoded to bytes and the bytes to a path with ``os.fsdecode``, never
    as UTF-8 text: ``caf%E9.csv`` is the Latin-1 file ``b"caf\\xe9.csv"``, not ``caf\ufffd.csv``.
    ``?`` and ``#`` are part of the path (a URI from :func:`file_uri` always escapes them).

    Raises:
        ValueError: not a ``file://`` URI, or one naming another host.
    """
    if not uri.startswith(FILE_SCHEME):
        raise ValueError(f"{uri} is not a local file URI")
    rest = uri[len(FILE_SCHEME) :]
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost") or not slash:
        raise ValueError(f"{uri} is not a local file URI (host {host!r})")
    return Path(os.fsdecode(unquote_to_bytes("/" + path)))


def display_name(raw: bytes) -> str:
    """A file name as text that can always be shown, logged and stored (UTF-8, JSON, Parquet).

    Valid UTF-8 is kept as it is, except control characters; bytes that are not UTF-8 and
    control characters (newlines, escapes) are written as ``\\xNN``. Used only to show or
    name things: the URI, not this name, identifies the file.
    """
    text = raw.decode("utf-8", errors="backslashreplace")
    if text.isprintable():
        return text
    return "".join(f"\\x{ord(ch):02x}" if unicodedata.category(ch) == "Cc" else ch for ch in text)


class FileRef(BaseModel):
    """A complete file, seen by a watcher, identified by URI and fingerprint."""

    model_config = ConfigDict(frozen=True)

    uri: str = Field(description="file:///abs/path for local files, s3://bucket/key for S3.")
    size: int = Field(ge=0, description="Size in bytes when the file was seen complete.")
    mtime: float = Field(description="Last modification time, seconds since the epoch (UTC).")
    dataset: str | None = Field(
        default=None, description="Dataset the routing rules chose, or None if none matched."
    )
    sha256: str | None = Field(default=None, description="Content hash, where cheap to compute.")
    etag: str | None = Field(default=None, description="S3 ETag of the object.")
    version_id: str | None = Field(default=None, description="S3 version id, if versioned.")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str | None) -> str | None:
        return None if value is None else check_dataset_name(value)

    @property
    def fingerprint(self) -> str:
        """Identity of this version: ETag(+version) on S3, content hash or size+mtime locally."""
        if self.etag:
            etag = self.etag.strip('"')
            return f"etag:{etag}:{self.version_id}" if self.version_id else f"etag:{etag}"
        if self.sha256:
            return f"sha256:{self.sha256}"
        return f"stat:{self.size}:{int(self.mtime * 1_000_000)}"

    @property
    def name(self) -> str:
        """The file's base name, for showing and naming (see :func:`display_name`).

        Locally it is the last segment of the path the URI encodes; on S3 the last segment
        of the key (kept verbatim in the URI: ``?`` and ``#`` are part of it).
        """
        _scheme, _sep, rest = self.uri.partition("://")
        path = rest.partition("/")[2]
        if self.is_local:
            return display_name(
                PurePosixPath(os.fsdecode(unquote_to_bytes(path))).name.encode(
                    errors="surrogateescape"
                )
            )
        return display_name(PurePosixPath(path).name.encode(errors="surrogateescape"))

    @property
    def is_local(self) -> bool:
        """Whether the file lives on a local filesystem."""
        return self.uri.startswith(FILE_SCHEME)

    def local_path(self) -> Path:
        """The filesystem path of a ``file://`` URI, byte for byte (:func:`path_of_file_uri`).

        Raises:
            ValueError: the URI is not a local one.
        """
        return path_of_file_uri(self.uri)


class FileState(StrEnum):
    """Where a file version stands in its life; the ledger stores one per version."""

    DETECTED = "detected"  # seen complete, not yet handed to Prefect
    DISPATCHED = "dispatched"  # event emitted, flow run not yet confirmed
    QUEUED = "queued"  # a flow run exists for it
    RUNNING = "running"  # a flow run is working on it
    INGESTED = "ingested"  # written to the lake
    QUARANTINED = "quarantined"  # rejected with a reason
    FAILED = "failed"  # gave up after retries (transient faults or a bug)

    @property
    def is_final(self) -> bool:
        """Whether no further work is expected without a replay."""
        return self in (FileState.INGESTED, FileState.QUARANTINED, FileState.FAILED)


class IngestRequest(BaseModel):
    """The ``ingest-file`` flow's parameter: which file, and which dispatch asked for it."""

    ref: FileRef = Field(description="The file to ingest.")
    dispatch_id: str = Field(description="Unique id of this dispatch attempt (watcher or replay).")
    config_path: str | None = Field(
        default=None, description="hopper.yaml to use; None means the worker's HOPPER_CONFIG."
    )
    replay: bool = Field(default=False, description="True when `hopper replay` asked for it.")


class IngestBatch(BaseModel):
    """The ``ingest-batch`` flow's parameter: files that arrived together, one run for all.

    Every file keeps its own ledger entry, outcome, alert and replay; only the flow run (and
    its start-up cost) is shared. The watcher sends only the dispatch id: the files are the
    ledger's versions taken under it, which keeps the event small however large the batch
    (Prefect's automation renders and stores every parameter).
    """

    dispatch_id: str = Field(description="Unique id of this dispatch.")
    count: int = Field(default=0, ge=0, description="How many files the dispatch took.")
    datasets: list[str] = Field(default_factory=list, description="Their datasets.")
    refs: list[FileRef] = Field(
        default_factory=list,
        description="The files themselves, if given; otherwise read from the ledger.",
    )
    config_path: str | None = Field(
        default=None, description="hopper.yaml to use; None means the worker's HOPPER_CONFIG."
    )

    def requests(self, refs: list[FileRef] | None = None) -> list[IngestRequest]:
        """One ``IngestRequest`` per file of the batch (``refs`` if given, else ``self.refs``)."""
        return [
            IngestRequest(ref=ref, dispatch_id=self.dispatch_id, config_path=self.config_path)
            for ref in (self.refs if refs is None else refs)
        ]


class IngestOutcome(BaseModel):
    """What happened to one file version; stored in the ledger and shown in artifacts."""

    uri: str = Field(description="The source file's URI.")
    fingerprint: str = Field(description="The source version's fingerprint.")
    dataset: str | None = Field(default=None, description="Dataset the file was routed to.")
    state: FileState = Field(description="Final state: ingested, quarantined or failed.")
    rows_in: int = Field(default=0, description="Rows read from the source.")
    rows_out: int = Field(default=0, description="Rows written to the lake.")
    rows_rejected: int = Field(default=0, description="Rows sent to quarantine.")
    rows_rescued: int = Field(
        default=0,
        description="Rows written with values rescued into ``_rescued_data`` (bad_rows: rescue).",
    )
    bytes_out: int = Field(
        default=0,
        description="Parquet bytes written for the file (for a table lake, its staged file).",
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="Lake files written; for a table lake, the table and snapshot "
        "(``<namespace>.<dataset>@<snapshot id>``).",
    )
    staged: list[str] = Field(
        default_factory=list,
        description="For a table lake: the staged file waiting for the batch's commit "
        "(empty once committed, and for a Parquet lake).",
    )
    quarantine_path: str | None = Field(default=None, description="Quarantined copy, if any.")
    reason: str | None = Field(default=None, description="One-line reason when not ingested.")
    schema_: dict[str, str] = Field(
        default_factory=dict, alias="schema", description="Output column → Arrow type."
    )
    seconds: float = Field(default=0.0, description="Wall time spent ingesting.")

    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def of(cls, ref: FileRef, state: FileState, **fields: Any) -> IngestOutcome:
        """The outcome of ``ref``'s version (its URI, fingerprint and dataset) and ``fields``."""
        return cls(
            uri=ref.uri, fingerprint=ref.fingerprint, dataset=ref.dataset, state=state, **fields
        )
