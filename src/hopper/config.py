"""``hopper.yaml``: sources, routing, lake, quarantine, alerts — validated, with line numbers.

Relative paths in the file are resolved against the file's own folder, so a Hopper home can
be moved or scaffolded anywhere (``hopper init DIR``). The file is read by
:mod:`hopper.yamlfile`, as dataset contracts are, so an error names its key and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hopper.errors import ConfigError
from hopper.yamlfile import YamlFile, key_path, read_yaml

DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Valid dataset names, the one definition (routing, file refs, contracts, quarantine folders).

A dataset names folders in the lake and the quarantine, so it is never a path. Use
``fullmatch``: ``$`` alone also matches before a final newline.
"""


def check_dataset_name(value: str) -> str:
    """Return ``value`` if it is a valid dataset name (a pydantic validator's body).

    Raises:
        ValueError: ``value`` does not match :data:`DATASET_NAME`.
    """
    if not DATASET_NAME.fullmatch(value):
        raise ValueError(f"dataset name {value!r} must match {DATASET_NAME.pattern}")
    return value


AfterIngest = Literal["keep", "delete", "archive"]
"""A source's clean-up once a file is ingested (:mod:`hopper.cleanup`)."""


class FolderSource(BaseModel):
    """A local folder watched for new files; its first sub-folder names the dataset."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["folder"] = "folder"
    path: Path = Field(description="Folder to watch (relative to hopper.yaml).")
    recursive: bool = Field(default=True, description="Watch sub-folders too.")
    follow_symlinks: bool = Field(
        default=False,
        description="Ingest symbolic links to files, as long as the link resolves inside this "
        "folder; a link pointing out of it is never followed. Off: links are ignored.",
    )
    after_ingest: AfterIngest = Field(
        default="keep",
        description="What happens to a source file once its output is committed and the "
        "ledger says ingested: keep it, delete it, or archive it (move it to <archive>/"
        "<dataset>/<YYYY-MM-DD>/). Quarantined and failed files always stay where they are.",
    )

    def follows(self, path: Path) -> bool:
        """Whether ``path`` is a link this source follows: on, and resolving to a file inside."""
        if not (self.follow_symlinks and path.is_symlink()):
            return False
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, or a loop
            return False
        return target.is_file() and target.is_relative_to(self.path.resolve())


class S3Source(BaseModel):
    """An S3 bucket and prefix watched for objects; the first folder under it names the dataset."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["s3"] = "s3"
    bucket: str = Field(min_length=3, description="Bucket name, without s3://.")
    prefix: str = Field(
        default="",
        description="Watched root inside the bucket, a folder such as 'incoming/' ('' = whole "
        "bucket); a trailing '/' is added. The first folder under it names the dataset.",
    )
    mode: Literal["notifications", "listing"] = Field(
        default="listing",
        description="'listing': list the prefix every listing_seconds. 'notifications': read "
        "S3 event notifications from queue_url, reconciled by a listing every listing_seconds.",
    )
    queue_url: str | None = Field(
        default=None, description="SQS queue receiving the bucket's notifications (notifications)."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="S3/SQS endpoint for moto, MinIO or other compatible stores; default: "
        "AWS_ENDPOINT_URL or AWS itself.",
    )
    region: str | None = Field(
        default=None, description="AWS region; default: the AWS chain (AWS_DEFAULT_REGION…)."
    )
    listing_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Period of the listing; in notifications mode, of the reconciliation listing.",
    )
    recursive: bool = Field(
        default=True, description="Include objects in sub-folders (not only directly under prefix)."
    )
    after_ingest: AfterIngest = Field(
        default="keep",
        description="What happens to a source file once its output is committed and the "
        "ledger says ingested: keep it, delete it, or archive it (move it to <archive>/"
        "<dataset>/<YYYY-MM-DD>/). Quarantined and failed files always stay where they are.",
    )

    @field_validator("bucket")
    @classmethod
    def _bare_bucket(cls, value: str) -> str:
        if "/" in value or value.startswith("s3:"):
            raise ValueError(
                f"bucket {value!r} must be a bare bucket name; put the folder in 'prefix'"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _folder_prefix(cls, value: str) -> str:
        value = value.lstrip("/")
        return value if not value or value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _queue_for_notifications(self) -> S3Source:
        if self.mode == "notifications" and not self.queue_url:
            raise ValueError("mode 'notifications' needs queue_url (the SQS queue's URL)")
        return self

    @property
    def root(self) -> str:
        """``s3://bucket/prefix``, for log lines."""
        return f"s3://{self.bucket}/{self.prefix}"


# --------------------------------------------------------------------------- pure helpers


class RoutingRule(BaseModel):
    """An explicit glob → dataset rule; rules are tried in order before the default routing."""

    model_config = ConfigDict(extra="forbid")

    glob: str = Field(description="Glob on the path relative to the source root, e.g. 'x/*.csv'.")
    dataset: str = Field(description="Dataset for files matching the glob.")

    @field_validator("dataset")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        return check_dataset_name(value)


class WatchOptions(BaseModel):
    """How the watcher decides a file is complete and how often it reconciles."""

    model_config = ConfigDict(extra="forbid")

    stable_seconds: float = Field(
        default=0.25, ge=0, description="A file must keep its size and mtime this long."
    )
    rescan_seconds: float = Field(
        default=60.0, gt=0, description="Period of the full rescan that catches missed events."
    )
    confirm_seconds: float = Field(
        default=20.0, gt=0, description="Re-dispatch a file if no flow run exists after this."
    )
    batch_max_files: int = Field(
        default=4000,
        ge=1,
        le=5000,
        description="Files due together go to ingest-batch runs of at most this many each; "
        "a burst is cut into about 2 runs (so that two workers share it), of at least 500 "
        "files each and at most this many.",
    )
    max_batch_bytes: int = Field(
        default=4 * 1024**3,
        ge=1,
        description="At most this many bytes of files (their sizes added) in one ingest-batch "
        "run, so a burst of large files is spread over several runs; a single larger file "
        "goes alone. Default 4 GiB.",
    )
    ignore: list[str] = Field(
        default_factory=lambda: [".*", "*.tmp", "*.part", "*.crdownload", "~*", "*.swp"],
        description="File-name globs that are never ingested (temporary and hidden files).",
    )


class AlertTarget(BaseModel):
    """A notification target; its secrets come from environment variables it names."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook", "slack", "teams", "email"] = Field(description="Kind of target.")
    name: str | None = Field(
        default=None, description="Name of the Prefect notification block (default: derived)."
    )
    url_env: str | None = Field(
        default=None,
        description="Environment variable holding the webhook URL (webhook, slack, teams).",
    )
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the SendGrid API key (email)."
    )
    sender: str | None = Field(default=None, description="Sender address (email).")
    to: list[str] = Field(default_factory=list, description="Recipients (email).")

    @model_validator(mode="after")
    def _secrets_named(self) -> AlertTarget:
        if self.type == "email" and not (self.api_key_env and self.sender and self.to):
            raise ValueError("an email target needs api_key_env, sender and to")
        if self.type != "email" and not self.url_env:
            raise ValueError(f"a {self.type} target needs url_env (the variable with its URL)")
        return self


class AlertPolicy(BaseModel):
    """When alerts go out: once per incident, held briefly so a storm becomes one digest."""

    model_config = ConfigDict(extra="forbid")

    hold_seconds: float = Field(
        default=10.0, ge=0, description="Send once no new failure arrived for this long."
    )
    max_hold_seconds: float = Field(
        default=120.0, gt=0, description="Never hold an alert longer than this."
    )
    digest_threshold: int = Field(
        default=10, ge=1, description="More failures than this within the window → one digest."
    )
    digest_window_minutes: float = Field(
        default=10.0, gt=0, description="Window for counting failures towards a digest."
    )


class MetricsOptions(BaseModel):
    """Prometheus ``/metrics`` endpoints of the watcher and the warm worker (``hopper.metrics``).

    Off unless enabled: a fixed port on every machine that runs Hopper would surprise; a port
    already taken costs a warning, never the process.
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Serve /metrics from watcher and worker.")
    host: str = Field(default="127.0.0.1", description="Address the endpoints listen on.")
    watcher_port: int = Field(default=9461, ge=1, le=65535, description="The watcher's port.")
    worker_port: int = Field(default=9462, ge=1, le=65535, description="The worker's port.")


class S3Options(BaseModel):
    """Where S3 is, for the lake, the quarantine and S3 sources without their own settings.

    Credentials never go here: they come from the AWS chain (environment, profile, role).
    """

    model_config = ConfigDict(extra="forbid")

    endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint (moto, MinIO…); default: AWS_ENDPOINT_URL or AWS.",
    )
    region: str | None = Field(default=None, description="AWS region; default: the AWS chain.")


_SECRET_KEY = re.compile(r"secret|password|token|credential|access-key", re.IGNORECASE)

LANDING_WINDOW_HOURS = 168
"""How far back the ingest path reads snapshot summaries for exactly-once (7 days; equal to
``hopper.tables.commit.LANDING_WINDOW_SECONDS``, a test keeps them so): the shortest
snapshot age that upkeep may expire."""


class MaintainOptions(BaseModel):
    """Upkeep of an Iceberg lake's tables: ``hopper maintain`` and ``hopper-maintain``."""

    model_config = ConfigDict(extra="forbid")

    compact: bool = Field(
        default=True,
        description="Rewrite each partition's small data files (under 3/4 of target_file_mb, "
        "two or more) into files near target_file_mb.",
    )
    snapshot_max_age_hours: float = Field(
        default=LANDING_WINDOW_HOURS,
        description="Expire snapshots older than this (hours); never less than 168, the window "
        "in which a retried batch looks for its own commit.",
    )
    keep_snapshots: int = Field(
        default=10, ge=1, description="Always keep at least this many of the latest snapshots."
    )
    orphan_min_age_hours: float = Field(
        default=24.0,
        ge=1,
        description="Delete unreferenced files under a table's location only once they are "
        "this old (hours), so a commit in progress never loses its files.",
    )

    @field_validator("snapshot_max_age_hours")
    @classmethod
    def _not_inside_the_landing_window(cls, hours: float) -> float:
        if hours < LANDING_WINDOW_HOURS:
            raise ValueError(
                f"{hours:g} hours is shorter than the {LANDING_WINDOW_HOURS} hours in which a "
                "retried batch looks for its own commit in the table's snapshots; expiring them "
                "sooner could let it append its rows twice. Set it to "
                f"{LANDING_WINDOW_HOURS} or more (keep_snapshots bounds the history as well)"
            )
        return hours


class LakeOptions(BaseModel):
    """Where validated rows go and in what form: Parquet files, or Apache Iceberg tables.

    ``lake: lake`` (a bare location) is ``lake: {path: lake}``: Parquet files, as always.
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field(default="lake", description="A folder, or s3://bucket/prefix.")
    format: Literal["parquet", "iceberg"] = Field(
        default="parquet",
        description="parquet: one file per source and partition, Hive folders; iceberg: one "
        "Apache Iceberg table per dataset, one commit per batch.",
    )
    namespace: str = Field(
        default="hopper",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Iceberg namespace of the tables (<namespace>.<dataset>).",
    )
    catalog: dict[str, str] = Field(
        default_factory=dict,
        description="pyiceberg catalog properties (type, uri, warehouse…); empty: the SQL "
        "catalog 'hopper' on <state_dir>/catalog.db. Secrets come from the environment "
        "(PYICEBERG_CATALOG__HOPPER__<PROPERTY>), never from this file.",
    )
    target_file_mb: int = Field(
        default=128, ge=1, le=4096, description="Target size of an Iceberg data file (MiB)."
    )
    maintain: MaintainOptions = Field(
        default_factory=MaintainOptions,
        description="Table upkeep: compaction, snapshot expiry, orphan files (iceberg only).",
    )

    @field_validator("catalog")
    @classmethod
    def _no_secrets(cls, catalog: dict[str, str]) -> dict[str, str]:
        secret = sorted(k for k in catalog if _SECRET_KEY.search(k))
        if secret:
            raise ValueError(
                f"{', '.join(secret)}: secrets do not belong in hopper.yaml; set them in the "
                "environment as PYICEBERG_CATALOG__HOPPER__<PROPERTY> (e.g. "
                "PYICEBERG_CATALOG__HOPPER__TOKEN), or use the AWS chain for Glue and S3"
            )
        return catalog

    @property
    def is_table(self) -> bool:
        """Whether datasets are tables (Iceberg) rather than piles of files."""
        return self.format == "iceberg"


def _default_sources() -> list[FolderSource | S3Source]:
    return [FolderSource(path=Path("inbox"))]


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


class HopperConfig(BaseModel):
    """The whole of ``hopper.yaml``."""

    model_config = ConfigDict(extra="forbid")

    sources: list[FolderSource | S3Source] = Field(
        default_factory=_default_sources,
        description="Where files arrive.",
    )
    routing: list[RoutingRule] = Field(
        default_factory=list, description="Explicit glob rules; they override default routing."
    )
    lake: LakeOptions = Field(
        default_factory=LakeOptions,
        description="Where validated rows go: a location (Parquet files), or "
        "{path, format: parquet | iceberg, namespace, catalog, target_file_mb}.",
    )
    quarantine: str = Field(
        default="quarantine",
        description="Where rejected files go: a folder, or s3://bucket/prefix.",
    )
    archive: str = Field(
        default="archive",
        description="Where sources with after_ingest: archive put ingested files: a folder, or "
        "s3://bucket/prefix (needed by S3 sources). Never inside a watched source.",
    )
    s3: S3Options = Field(default_factory=S3Options, description="S3 endpoint and region.")
    datasets_dir: Path = Field(default=Path("datasets"), description="Dataset contracts.")
    state_dir: Path = Field(default=Path(".hopper"), description="Ledger and local state.")
    work_pool: str = Field(default="hopper", description="Prefect work pool that runs flows.")
    alerts: list[AlertTarget] = Field(default_factory=list, description="Notification targets.")
    alert_policy: AlertPolicy = Field(
        default_factory=AlertPolicy, description="Alert holding and storm control."
    )
    watch: WatchOptions = Field(default_factory=WatchOptions, description="Watcher tuning.")
    metrics: MetricsOptions = Field(
        default_factory=MetricsOptions, description="Prometheus endpoints."
    )

    path: Path | None = Field(default=None, exclude=True, description="Where it was loaded from.")

    @field_validator("lake", mode="before")
    @classmethod
    def _lake_location(cls, value: object) -> object:
        return {"path": value} if isinstance(value, str | Path) else value

    def resolved(self, base: Path) -> HopperConfig:
        """A copy with every relative path made absolute against ``base``."""

        def absolute(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        def location(text: str) -> str:
            return text.rstrip("/") if _URI.match(text) else str(absolute(Path(text)))

        sources = [
            s.model_copy(update={"path": absolute(s.path)}) if isinstance(s, FolderSource) else s
            for s in self.sources
        ]
        resolved = self.model_copy(
            update={
                "sources": sources,
                "lake": self.lake.model_copy(update={"path": location(self.lake.path)}),
                "quarantine": location(self.quarantine),
                "archive": location(self.archive),
                "datasets_dir": absolute(self.datasets_dir),
                "state_dir": absolute(self.state_dir),
            }
        )
        problem = resolved.archive_problem()
        if problem:
            raise ConfigError(problem)
        return resolved

    def archive_problem(self) -> str | None:
        """Why the archive cannot serve the archiving sources (resolved paths), or None.

        An archive inside a watched source would be ingested again; an S3 object is archived
        by a server-side copy, so an S3 source needs an ``s3://`` archive.
        """
        archiving = [s for s in self.sources if s.after_ingest == "archive"]
        if not archiving:
            return None
        on_s3 = bool(_URI.match(self.archive))  # a bucket (the only kind of URI a store takes)
        for spec in archiving:
            if isinstance(spec, S3Source) and not on_s3:
                return (
                    f"archive: {self.archive} is a folder, but the S3 source {spec.root} "
                    "archives its objects by a server-side copy; set archive: to an "
                    "s3://bucket/prefix location"
                )
        for spec in self.sources:
            if isinstance(spec, FolderSource) and not on_s3:
                inside = Path(self.archive).resolve().is_relative_to(spec.path.resolve())
            elif isinstance(spec, S3Source) and on_s3:
                inside = (self.archive.rstrip("/") + "/").startswith(spec.root)
            else:
                inside = False
            if inside:
                where = spec.path if isinstance(spec, FolderSource) else spec.root
                return (
                    f"archive: {self.archive} lies inside the watched source {where}, so "
                    "archived files would be ingested again; put the archive outside every "
                    "source (the default is 'archive' beside hopper.yaml)"
                )
        return None

    @property
    def folders(self) -> list[FolderSource]:
        """The local folder sources."""
        return [s for s in self.sources if isinstance(s, FolderSource)]

    def contract_path(self, dataset: str) -> Path:
        """Where the contract of ``dataset`` lives."""
        return self.datasets_dir / f"{dataset}.yaml"


def describe_validation_error(doc: YamlFile, exc: ValidationError) -> str:
    """One line per problem: ``file:line: key.path: message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        line = doc.line_of(loc)
        where = f"{doc.path}:{line}" if line else str(doc.path)
        lines.append(f"{where}: {key_path(loc) or '(top level)'}: {err['msg']}")
    return "\n".join(lines)


def load_config(path: Path) -> HopperConfig:
    """Load and validate ``hopper.yaml``, resolving relative paths against its folder.

    Raises:
        ConfigError: naming the file, line and key of every problem.
    """
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such config. Create one with `hopper init DIR` and pass "
            "--config DIR/hopper.yaml (or set HOPPER_CONFIG)."
        )
    doc = read_yaml(path, "config file")
    try:
        cfg = HopperConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(doc, exc)) from None
    return cfg.resolved(path.parent).model_copy(update={"path": path})
