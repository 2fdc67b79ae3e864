"""How rejected files are kept: ``<quarantine>/<dataset>/<date>/<file>`` and its reason.

:func:`quarantine` is the one way a rejected file is recorded, whoever rejects it (the reader
for a file that breaks its contract, the table commit for rows the table cannot take): the
copy, the reason file (violations, contract version, run, how to replay) and the outcome.

A rejected file is copied beside a ``<file>.error.json`` that says why; a name already taken
that day by another source or version gets a version id, claimed atomically so that two runs
never take the same one. Rows set aside by ``bad_rows: quarantine`` are written next to them,
named like the source's lake output.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from hopper.config import DATASET_NAME, HopperConfig
from hopper.contracts import Contract
from hopper.errors import SourceGoneError, TerminalError
from hopper.files import replay_command
from hopper.models import FILE_SCHEME, FileRef, FileState, IngestOutcome
from hopper.prefect_api import file_replay_url, replay_deployment_page
from hopper.sink.names import UNSAFE, output_name
from hopper.sink.parquet_lake import PARQUET_CONTENT_TYPE, parquet
from hopper.stores import join, store_for

log = logging.getLogger(__name__)


def quarantine_folder(quarantine: str, dataset: str | None, when: datetime) -> str:
    """``<quarantine>/<dataset>/<YYYY-MM-DD>`` (pure); anything but a dataset name is unrouted."""
    folder = dataset if dataset and DATASET_NAME.fullmatch(dataset) else "_unrouted"
    return join(quarantine, folder, when.strftime("%Y-%m-%d"))


SAFE_NAME_LIMIT = 150
"""Longest quarantine file name: with ``.error.json`` and a temp suffix, far below 255 bytes."""


def safe_name(name: str, limit: int = SAFE_NAME_LIMIT) -> str:
    """A file name reduced to safe characters (never empty, never dot-leading, never long).

    Only ``[A-Za-z0-9._-]`` survive (so no separator, control character or odd Unicode); a
    name longer than ``limit`` keeps its suffixes (``.csv.gz``) and gets a hash of the whole
    name, so that long names differing only at the end stay apart.
    """
    safe = UNSAFE.sub("_", name).lstrip(".") or "file"
    if len(safe) <= limit:
        return safe
    digest = hashlib.sha256(name.encode(errors="surrogateescape")).hexdigest()[:10]
    return _with_id(safe, digest, limit)


def _with_id(name: str, tag: str, limit: int | None = None) -> str:
    """``<stem>-<tag><suffixes>``: ``tag`` before the last two suffixes (``.csv.gz``).

    With ``limit``, the stem is cut so that the whole name fits in ``limit`` characters.
    """
    suffix = "".join(PurePosixPath(name).suffixes[-2:])[:40]
    stem = name[: len(name) - len(suffix)] or "file"
    if limit is not None:
        stem = stem[: limit - len(suffix) - len(tag) - 1]
    return f"{stem}-{tag}{suffix}"


def quarantine_file(
    *,
    source_uri: str,
    local_copy: Path | None,
    quarantine: str,
    dataset: str | None,
    when: datetime,
    reason: dict[str, Any],
    fingerprint: str = "",
    s3: Any = None,
) -> str:
    """Copy a rejected file to ``quarantine/<dataset>/<date>/<file>`` with ``<file>.error.json``.

    ``<file>`` is the source's name, unless another source (``a/data.csv`` and ``b/data.csv``)
    or another version of it already has that name in the folder that day: then the copy is
    ``<file stem>-<version id><suffixes>`` (:func:`versioned_name`), so that no rejected file
    replaces another's copy. The name is claimed atomically (:meth:`Store.claim
    <hopper.stores.Store.claim>`), so concurrent runs cannot both take it. The copy is made
    where the source is when the store reaches it (S3 to S3, server side), else from
    ``local_copy``; a source that cannot be copied is noted as ``source_missing``.

    Args:
        source_uri: the rejected file's URI.
        local_copy: a readable local copy of it (the file itself, or a fetched temp copy),
            or None if it is gone — the reason file is written all the same.
        quarantine: a folder or ``s3://`` location.
        dataset: the file's dataset, if known.
        when: time of the decision (names the date folder).
        reason: the reason file's content (``uri`` and ``fingerprint`` are added).
        fingerprint: the rejected version's fingerprint.
        s3: an S3 client, needed when the quarantine or the source is on S3.

    Returns:
        Where the quarantined copy is.
    """
    reason = {"uri": source_uri, "fingerprint": fingerprint, **reason}
    if local_copy is not None and local_copy.is_symlink():
        # Copying would follow the link and put whatever it points at into the quarantine.
        reason = {**reason, "source_not_copied": "the source is a symbolic link"}
        local_copy = None
    local_source = source_uri.startswith(FILE_SCHEME)
    name = safe_name(
        local_copy.name if local_source and local_copy else source_uri.rsplit("/", 1)[-1]
    )
    store = store_for(quarantine, s3)
    folder = quarantine_folder(quarantine, dataset, when)
    held = store.claim(join(folder, f"{name}.error.json"), version_claim(reason))
    if held is not None and not same_version(held, reason):
        name = versioned_name(name, source_uri, fingerprint)
    target = join(folder, name)
    try:
        if store.reaches(source_uri):  # a server-side copy: no upload of the local copy
            store.copy(source_uri, target)
        elif local_copy is not None and local_copy.is_file():
            store.upload(local_copy, target)
        else:
            reason = {**reason, "source_missing": True}
    except SourceGoneError:
        log.warning("%s is gone; quarantining its reason only", source_uri)
        reason = {**reason, "source_missing": True}
    store.put_text(join(folder, f"{name}.error.json"), json.dumps(reason, indent=2, default=str))
    log.info("quarantined %s to %s", source_uri, target)
    return target


def versioned_name(name: str, uri: str, fingerprint: str) -> str:
    """``name`` with a short id of one version of one source before its suffixes."""
    return _with_id(name, hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()[:8])


def version_claim(reason: dict[str, Any]) -> bytes:
    """What claims a quarantine name for a version: its reason as known before the copy (it
    names the version), so that whoever reads the file meanwhile already reads why; the
    final reason (which may add that the source was missing) replaces it."""
    return json.dumps(reason, indent=2, default=str).encode()


def same_version(reason_text: str | bytes, reason: dict[str, Any]) -> bool:
    """Whether a reason file (its text, or a claim) is about the same version as ``reason``."""
    try:
        other = json.loads(reason_text)
    except ValueError:
        return False
    return (
        isinstance(other, dict)
        and other.get("uri") == reason["uri"]
        and other.get("fingerprint") == reason["fingerprint"]
    )


def write_rejected_rows(
    rejected: pa.Table,
    *,
    quarantine: str,
    dataset: str | None,
    source_name: str,
    uri: str,
    when: datetime,
    s3: Any = None,
) -> str:
    """Write a file's bad rows (with their reasons) beside its quarantine date folder."""
    name = output_name(source_name, uri).replace(".parquet", ".rejected.parquet")
    target = join(quarantine_folder(quarantine, dataset, when), name)
    store_for(quarantine, s3).write_atomic(target, parquet(rejected), PARQUET_CONTENT_TYPE)
    return target


def quarantine(
    config: HopperConfig,
    ref: FileRef,
    exc: TerminalError,
    contract: Contract | None,
    flow_run_id: str | None,
    now: datetime,
    local: Path | None,
    s3: Any,
) -> IngestOutcome:
    """Copy the file to quarantine with a reason file, and describe that as an outcome.

    ``local`` is a readable copy of the file if one was fetched; else the file itself is
    copied (from its folder, or server side on S3). The reason file says both ways to run
    the file again once fixed: the ``hopper replay`` command, and the ``hopper-replay``
    deployment's run form in the Prefect UI (None if that deployment cannot be found).
    """
    reason = str(exc)
    first_line = one_line_reason(exc)
    log.warning("%s quarantined: %s", ref.uri, first_line)
    body = {
        "uri": ref.uri,
        "fingerprint": ref.fingerprint,
        "dataset": ref.dataset,
        "error": type(exc).__name__,
        "reason": reason,
        "violations": exc.violations,
        "contract_version": contract.version if contract else None,
        "flow_run_id": flow_run_id,
        "quarantined_at": now.isoformat(),
        "replay": replay_command(ref),
        "replay_url": file_replay_url(replay_deployment_page(), ref),
    }
    copy = quarantine_file(
        source_uri=ref.uri,
        local_copy=local if local is not None else (ref.local_path() if ref.is_local else None),
        quarantine=config.quarantine,
        dataset=ref.dataset,
        when=now,
        reason=body,
        fingerprint=ref.fingerprint,
        s3=s3,
    )
    return IngestOutcome.of(ref, FileState.QUARANTINED, quarantine_path=copy, reason=first_line)


def one_line_reason(exc: TerminalError, limit: int = 400) -> str:
    """A one-line reason naming columns, rows and samples (for alerts and `hopper status`)."""
    parts = []
    for v in exc.violations:
        where = f"column {v['column']!r}" if v.get("column") else "file"
        rows = f" (rows {', '.join(map(str, v['rows'][:3]))})" if v.get("rows") else ""
        samples = (
            f" e.g. {', '.join(repr(s) for s in v['samples'][:2])}" if v.get("samples") else ""
        )
        parts.append(f"{where}: {v.get('message', v.get('kind', 'invalid'))}{rows}{samples}")
    text = "; ".join(parts) if parts else (str(exc).splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"
