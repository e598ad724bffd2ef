"""Typed settings, loaded once and passed down explicitly.

Every setting is declared once in ``SETTINGS`` (section, key, default, help).
Precedence, lowest first: these embedded defaults, ``<data dir>/appliance.toml``,
then environment variables named ``PACS_<SECTION>_<KEY>`` (for example
``PACS_DICOM_PORT=11113``). ``config/appliance.toml`` in the repository is the
documented copy of the defaults; a test keeps the two in step.

Lists are written in TOML as arrays, and in environment variables as
comma-separated values.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

CONFIG_FILE_NAME = "appliance.toml"


@dataclass(frozen=True)
class Setting:
    section: str
    key: str
    default: Any
    help: str

    @property
    def env_name(self) -> str:
        return f"PACS_{self.section}_{self.key}".upper()


SETTINGS: tuple[Setting, ...] = (
    # [dicom] the DICOM node
    Setting("dicom", "ae_title", "PACSBOX", "AE title of this archive; modalities must call it exactly."),
    Setting("dicom", "host", "0.0.0.0", "Address the DICOM listener binds to (0.0.0.0 = every interface)."),
    Setting("dicom", "port", 11112, "TCP port of the DICOM listener (104 is the standard port)."),
    Setting("dicom", "allowed_callers", [],
            "Calling AE titles allowed to associate, as \"AE\" or \"AE@host\"; empty allows any caller. "
            "Peers registered with `pacs-appliance modality add` are allowed too."),
    Setting("dicom", "max_associations", 16, "Most associations served at once; more are rejected (transient)."),
    Setting("dicom", "acse_timeout", 30, "Seconds to wait for association negotiation messages."),
    Setting("dicom", "dimse_timeout", 60, "Seconds to wait for a DIMSE message within an association."),
    Setting("dicom", "network_timeout", 120, "Seconds an idle association may stay open before it is closed."),
    Setting("dicom", "max_pdu", 262144, "Largest PDU we receive, in bytes (0 = unlimited)."),
    Setting("dicom", "ingest_workers", 0,
            "Worker processes that serve storage associations (C-STORE and C-ECHO only, plain TCP) so that "
            "parallel senders use more than one core; the index stays in the main process. A lone storage "
            "association stays in the main process; concurrent ones go to the workers. Each worker costs "
            "~60 MB. 0 = every association in the main process; 1 or 2 on a 2-core box with several "
            "modalities sending at once (bench/README.md: 474 / 504 vs 398 instances/s on four associations)."),
    Setting("dicom", "commitment_retry_initial_seconds", 30,
            "Storage commitment: wait before calling a requester again that did not take its report; doubles "
            "after each failure. Reports are kept in the index and retried until delivered, across restarts."),
    Setting("dicom", "commitment_retry_max_seconds", 3600, "The longest wait between storage commitment report "
            "attempts."),
    Setting("dicom", "tls_port", 0,
            "TCP port of the DICOM TLS listener (2762 is the standard DICOM TLS port); 0 = no TLS listener. "
            "It serves the same services and association policy as the plain port."),
    Setting("dicom", "tls_only", False, "Do not open the plain DICOM port: modalities must use TLS on tls_port."),
    Setting("dicom", "tls_cert", "",
            "PEM certificate (chain) of the DICOM TLS listener; empty = the box's own <data dir>/tls/cert.pem "
            "(`pacs-appliance tls renew|install`). Relative paths are inside the data directory."),
    Setting("dicom", "tls_key", "", "PEM private key of tls_cert (unencrypted); empty = <data dir>/tls/key.pem."),
    Setting("dicom", "tls_ca", "",
            "PEM file of the CA certificates (or self-signed certificates) trusted for DICOM TLS: modalities' "
            "client certificates are checked against it when sent, and peers we call over TLS must chain to it."),
    Setting("dicom", "tls_require_client_cert", False,
            "Refuse TLS connections without a client certificate that chains to tls_ca; a client certificate "
            "must then name the calling AE title as its CN, unless the peer's certificate is pinned "
            "(`modality add|update --cert-fingerprint`)."),
    Setting("dicom", "tls_crl", "",
            "PEM file of the certificate revocation lists (CRLs) of the CAs in tls_ca: a revoked client "
            "certificate is refused. Needs a current CRL for every CA that issues client certificates; "
            "restart after replacing it. Empty = no revocation check. Relative paths are inside the data directory."),
    Setting("dicom", "tls_min_version", "1.2", "Oldest TLS version accepted: \"1.2\" or \"1.3\"."),
    # [http] the web app
    Setting("http", "host", "0.0.0.0", "Address the web UI and DICOMweb bind to."),
    Setting("http", "port", 8080, "TCP port of the web UI and DICOMweb."),
    Setting("http", "session_idle_minutes", 30, "A web session ends after this many minutes without a request."),
    Setting("http", "session_max_hours", 12, "A web session ends this many hours after login, however busy."),
    Setting("http", "login_max_failures", 5,
            "Failed logins for one user name from one address before that address may not try that name for "
            "lockout_minutes (4x as many from one address for any names lock the address; failures for a name "
            "from everywhere slow down addresses the user has not logged in from, up to 30 s between tries)."),
    Setting("http", "lockout_minutes", 15, "How long logins stay refused after too many failures."),
    Setting("http", "max_upload_mb", 2048,
            "Largest request body a logged-in user may send (STOW-RS); it is read part by part, in memory, "
            "never spooled to disk. Anonymous requests may send 8 KiB, forms 1 MiB."),
    Setting("http", "secure_cookies", False,
            "Always mark cookies Secure (HTTPS only); when off they are Secure whenever the request came over HTTPS."),
    Setting("http", "metrics_allowed", ["127.0.0.1", "::1"],
            "Addresses or networks (CIDR) that may read /metrics without a token; empty allows none."),
    Setting("http", "metrics_token", "",
            "A bearer token that also opens /metrics (Authorization: Bearer ...), e.g. for a Prometheus elsewhere."),
    Setting("http", "tls", False,
            "Serve the web UI over HTTPS on tls_port with <data dir>/tls/cert.pem and key.pem (made on the box at "
            "first boot on the appliance image; `pacs-appliance tls renew|install`); port then only redirects to HTTPS."),
    Setting("http", "tls_port", 8443, "TCP port of the HTTPS web UI when tls is on (443 on the appliance image)."),
    Setting("http", "public_url", "",
            "The address clients reach the box by when it sits behind a reverse proxy (e.g. "
            "\"https://pacs.clinic.lan\"); DICOMweb's RetrieveURL and BulkDataURI and OHIF's config use it. "
            "Empty: taken from each request."),
    # [site]
    Setting("site", "clinic_name", "", "The clinic's name, for the web UI; the appliance image sets it from the vendor config."),
    # [storage] the archive
    Setting("storage", "reserve_mb", 1024,
            "Free disk space (MiB) kept in reserve: below it, stores are refused with 0xA700 / HTTP 503."),
    Setting("storage", "chunk_kib", 1024, "Encryption chunk size in KiB: the most plaintext held in memory per object."),
    Setting("storage", "on_conflict", "replace",
            "A different object arrives under an existing SOP Instance UID: \"replace\" makes it current and keeps "
            "the replaced one as a version (`pacs-appliance storage versions`), audited; \"reject\" refuses it."),
    Setting("storage", "on_patient_change", "reject",
            "Such an object names another patient than the stored one: \"reject\" refuses it (DICOM 0xC771, "
            "HTTP 409), \"hold\" keeps it aside for an admin to accept or discard (admin page Replacements), "
            "\"replace\" replaces as for the same patient. Every case is audited."),
    Setting("storage", "orphans_keep_days", 30,
            "Objects of writes a crash interrupted (never acknowledged; moved to archive/orphans/ at start-up) "
            "are deleted this many days after they were written; 0 keeps them for ever."),
    Setting("storage", "recycle_bin_days", 30,
            "A deleted study, series or instance (admin, with a reason) stays in the recycle bin, restorable, this "
            "many days; then it is deleted from the disk, and offsite once the backup retention passes."),
    # [storage] recycling: free space by deleting the least recently used studies that are confirmed offsite
    # (appliance/services/recycle.py; `pacs-appliance storage recycle --dry-run` shows what would go and why)
    Setting("storage", "recycle", False,
            "Free disk space by deleting, least recently received or opened first, studies whose every object "
            "is confirmed offsite by the backup; they can be brought back with `pacs-appliance storage restore`. "
            "Studies not (fully) backed up are never deleted."),
    Setting("storage", "recycle_free_below_mb", 4096,
            "Recycling starts when free space drops below this (MiB); must be above reserve_mb."),
    Setting("storage", "recycle_target_free_mb", 8192,
            "Recycling stops once this much space (MiB) is free; must be at least recycle_free_below_mb."),
    Setting("storage", "recycle_min_age_days", 30,
            "Studies received or opened (viewer, export, C-MOVE/C-GET, DICOMweb) within this many days are kept."),
    Setting("storage", "recycle_check_minutes", 60,
            "How often free space is checked for recycling (it is also checked as images arrive)."),
    # [integrity] background sampled verification (appliance/services/verify.py Sampler;
    # `pacs-appliance verify` checks all)
    Setting("integrity", "sample_size", 200,
            "Objects decrypted and checked against their tags and digests in each background pass; 0 = off."),
    Setting("integrity", "interval_hours", 24.0, "Hours between background verification passes."),
    # [index] the index: an encrypted SQLite file in the data directory, or a PostgreSQL server
    Setting("index", "url", "",
            "PostgreSQL database for the index, as postgresql://user:password@host:port/dbname; empty = the "
            "embedded encrypted SQLite file (<data dir>/index.db). A server on another machine must be reached "
            "with TLS (?sslmode=verify-full&sslrootcert=...) unless allow_insecure is set."),
    Setting("index", "allow_insecure", False,
            "Allow an index server on another machine without TLS (only on a trusted network)."),
    Setting("index", "cache_mb", 32,
            "SQLite page cache per connection, in MiB; all connections together are held to about this "
            "(a process-wide soft limit: each thread that reads the index has its own connection)."),
    Setting("index", "case_sensitive_names", False,
            "Match person names case-sensitively in queries (the DICOM default); off suits people typing names."),
    Setting("index", "auto_rebuild", False,
            "When the index is missing or damaged at start while the archive holds objects: rebuild it from the "
            "archive and its latest snapshot on its own (off: refuse to start and say what to run)."),
    Setting("index", "snapshot_hours", 6.0,
            "Hours between sealed index snapshots kept in the archive (users, peers, worklist, audit, settings: "
            "what a rebuild cannot read from the images), counted from the newest one: a restart does not add one."),
    Setting("index", "snapshot_keep", 3, "Index snapshot generations kept in the archive."),
    # [dicomweb] the DICOMweb API under /dicomweb
    Setting("dicomweb", "cors_origins", [],
            "Origins (e.g. \"http://viewer.clinic.lan:3000\") allowed to call DICOMweb from a browser page on "
            "another origin, such as an OHIF viewer; \"*\" allows any; empty turns CORS off."),
    Setting("dicomweb", "render_cache_mb", 32,
            "Memory (MiB) for rendered JPEG/PNG frames, so scrolling a series again does not decode again."),
    Setting("dicomweb", "object_cache_mb", 24,
            "Memory (MiB) for decrypted objects being rendered or served frame by frame (never written to disk)."),
    Setting("dicomweb", "render_threads", 1,
            "Most frames decoded and rendered at once; more requests wait, so rendering cannot starve DICOM "
            "ingest (1 leaves the other core of a 2-core box to ingest; see bench/README.md)."),
    Setting("dicomweb", "stow_max_part_mb", 1024,
            "Largest single object accepted by STOW-RS, in MiB (each part is held in memory, never spooled to disk)."),
    Setting("dicomweb", "header_cache_entries", 5000,
            "Instance headers kept in memory for metadata and QIDO includefield requests."),
    Setting("dicomweb", "header_cache_mb", 32,
            "Memory (MiB) those headers may take (a parsed header costs ~0.5 KiB per attribute: 20-200 KiB)."),
    # [backup] offsite backup (appliance/backup/)
    Setting("backup", "target", "",
            "Where the nightly encrypted copy goes: file:///mnt/nas/pacs (a mounted folder), "
            "sftp://user@host:22/path (key-based), or s3://bucket/prefix; empty turns backup off."),
    Setting("backup", "window", "01:00-05:00",
            "Daily time window (local time, HH:MM-HH:MM, may cross midnight) in which the scheduled backup runs."),
    Setting("backup", "retention_days", 30,
            "Days an object deleted on the box (and an old manifest) is kept offsite before it is removed there."),
    Setting("backup", "max_kib_per_s", 0, "Upload bandwidth cap in KiB/s over all parallel uploads; 0 = no cap."),
    Setting("backup", "parallel", 4, "Objects uploaded at once."),
    Setting("backup", "warn_after_hours", 48,
            "The dashboard and /metrics warn when the last successful backup is older than this."),
    Setting("backup", "retries", 4, "Attempts after a failed run within the window, with doubling back-off."),
    Setting("backup", "retry_seconds", 300, "Wait before the first retry; doubles after each failure."),
    Setting("backup", "sftp_key_file", "", "Private key (unencrypted, readable only by the appliance) for SFTP."),
    Setting("backup", "sftp_known_hosts", "",
            "Where the SFTP server's host key is pinned on first use (default: <data dir>/keys/backup_known_hosts)."),
    Setting("backup", "s3_endpoint_url", "",
            "S3-compatible endpoint, e.g. https://s3.eu-central-003.backblazeb2.com; empty = AWS."),
    Setting("backup", "s3_region", "", "S3 region; empty = the endpoint's default."),
    Setting("backup", "s3_access_key_file", "",
            "File holding the S3 access key id; empty = AWS_ACCESS_KEY_ID or the usual AWS config files."),
    Setting("backup", "s3_secret_key_file", "",
            "File holding the S3 secret key; empty = AWS_SECRET_ACCESS_KEY or the usual AWS config files."),
    # [inbox] the watched import folder <data>/inbox (see appliance/importer/watcher.py)
    Setting("inbox", "enabled", True, "Watch <data>/inbox and import what is dropped there (files, ZIPs, CD folders)."),
    Setting("inbox", "after_import", "delete",
            "What happens to an imported file: \"delete\" it, or \"move\" it to inbox/processed/. Either way "
            "only after its content is safely in the archive. Files that fail are sealed with their reason (`pacs-appliance import failed list`)."),
    Setting("inbox", "stable_seconds", 2.0,
            "A file is imported only after its size and times have not changed for this many seconds "
            "(and, where Linux can tell, nobody has it open for writing)."),
    Setting("inbox", "poll_seconds", 10.0,
            "Rescan the inbox at least this often, for network shares that send no change notifications."),
    Setting("inbox", "processed_keep_days", 30,
            "Files in inbox/processed/ (after_import = \"move\"; their content is in the archive, the copies are "
            "plaintext) are deleted this many days after their import; 0 keeps them for ever."),
    Setting("inbox", "retry_seconds", 60.0, "After \"disk full\", wait this long before trying the inbox again."),
    Setting("inbox", "zip_member_max_mb", 4096,
            "Largest file accepted inside a ZIP, unpacked (MiB): guards against ZIP bombs."),
    Setting("inbox", "workers", 2, "Files imported at once from the inbox (and by `pacs-appliance import`)."),
    # [forward] auto-forwarding to registered peers (appliance/services/forward.py)
    Setting("forward", "rules", [],
            "Forward every stored instance that matches a rule to a registered peer: \"READPACS\" (everything), "
            "\"READPACS modality=CT,MR\", \"READPACS calling=US1\" or both conditions; one string per rule."),
    Setting("forward", "retry_initial_seconds", 30, "Wait after the first failed attempt; doubles after each failure."),
    Setting("forward", "retry_max_seconds", 3600, "The longest wait between attempts to a peer that is down."),
    Setting("forward", "max_attempts", 0,
            "Attempts before a job is marked failed (retry it with `pacs-appliance forward retry`); 0 = never give up."),
    # [worklist] the modality worklist (appliance/records/worklist.py)
    Setting("worklist", "expire_days", 2,
            "Worklist entries scheduled more than this many days ago are removed (checked hourly)."),
    # [update] signed A/B updates of the appliance image (appliance/update/; image-build/README.md)
    Setting("update", "url", "",
            "Vendor URL of the update bundle (.raucb) the box pulls on schedule; empty = no scheduled pull. "
            "Every bundle must be signed with the vendor key the image trusts, however it arrives."),
    Setting("update", "window", "02:00-04:00",
            "Local time during which a scheduled pull may install and reboot (HH:MM-HH:MM); empty = any time."),
    Setting("update", "keyring", "/etc/rauc/keyring.pem",
            "The vendor certificate every update bundle must be signed with (the image's RAUC keyring); "
            "the admin page's upload checks against it."),
    Setting("update", "confirm_timeout_s", 600,
            "After booting a new version: seconds for the service to become ready (READY and /healthz ok) "
            "before the box falls back to the previous version by itself."),
    # [ohif] the OHIF viewer served at /ohif (web/ohif; `pacs-appliance ohif install TARBALL`)
    Setting("ohif", "dist_dir", "",
            "Directory holding OHIF's release build (the dist of the npm package @ohif/app), served at /ohif; "
            "empty = <data dir>/ohif, where `pacs-appliance ohif install` puts it."),
    # [log]
    Setting("log", "level", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR. Logs never carry patient data."),
)


@dataclass(frozen=True)
class Section:
    """The values of one config section, read as attributes (``config.dicom.port``)."""

    name: str
    values: Mapping[str, Any]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__") or key == "values":  # pickle (ingest workers) probes before values is set
            raise AttributeError(key)
        try:
            return self.values[key]
        except KeyError:
            raise AttributeError(f"no setting [{self.name}] {key}") from None


@dataclass(frozen=True)
class Config:
    data_dir: Path
    sections: Mapping[str, Section] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)  # "section.key" -> where its value came from

    def __getattr__(self, name: str) -> Section:
        if name.startswith("__") or name == "sections":  # pickle (ingest workers) probes before sections is set
            raise AttributeError(name)
        try:
            return self.sections[name]
        except KeyError:
            raise AttributeError(f"no config section [{name}]") from None

    # Paths inside the data directory: one place names them.
    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.db"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def inbox_dir(self) -> Path:
        return self.data_dir / "inbox"

    @property
    def ohif_dir(self) -> Path:
        configured = self.sections["ohif"].dist_dir if "ohif" in self.sections else ""
        return Path(configured) if configured else self.data_dir / "ohif"

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE_NAME


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``PACS_DATA_DIR`` if set, else ``./var`` (a checkout's data directory)."""
    env = os.environ if env is None else env
    return Path(env.get("PACS_DATA_DIR") or "var")


def _coerce(setting: Setting, value: Any, source: str) -> Any:
    default = setting.default
    where = f"[{setting.section}] {setting.key} (from {source})"
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, list):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError
            return [str(v) for v in value]
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        kind = type(default).__name__
        raise ConfigError(f"{where}: expected a {kind}, got {value!r}") from None


PUBLIC_URL = re.compile(r"^https?://[^/?#\s]+(/[^?#\s]*)?$")


def load(data_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    """Merge defaults, the data directory's appliance.toml and PACS_* variables."""
    env = os.environ if env is None else env
    data_dir = Path(data_dir)
    file_values: dict[str, Any] = {}
    config_path = data_dir / CONFIG_FILE_NAME
    if config_path.exists():
        try:
            file_values = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None

    known = {(s.section, s.key) for s in SETTINGS}
    for section, values in file_values.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{config_path}: '{section}' must be a [section] table")
        for key in values:
            if (section, key) not in known:
                raise ConfigError(f"{config_path}: unknown setting [{section}] {key}")

    merged: dict[str, dict[str, Any]] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        value, source = s.default, "default"
        if s.key in file_values.get(s.section, {}):
            value, source = file_values[s.section][s.key], str(config_path)
        if s.env_name in env:
            value, source = env[s.env_name], f"${s.env_name}"
        merged.setdefault(s.section, {})[s.key] = _coerce(s, value, source)
        sources[f"{s.section}.{s.key}"] = source

    public_url = merged["http"]["public_url"]
    if public_url and not PUBLIC_URL.match(public_url):
        raise ConfigError(f"[http] public_url {public_url!r} (from {sources['http.public_url']}) must be an "
                          "http:// or https:// address with a host and no query, e.g. \"https://pacs.clinic.lan\"")
    return Config(
        data_dir=data_dir,
        sections={name: Section(name, values) for name, values in merged.items()},
        sources=sources,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_documented_defaults() -> str:
    """The text of config/appliance.toml: every setting, its default and what it means.

    Every setting is commented out under its [section], so a copy in a data
    directory changes nothing until an admin uncomments and edits a line.
    """
    lines = [
        "# PACS Appliance configuration: every setting with its default.",
        "#",
        "# To change a setting, uncomment its line in <data dir>/appliance.toml and restart.",
        "# Any setting can also be given as an environment variable named",
        "# PACS_<SECTION>_<KEY>, which wins over the file: e.g. PACS_DICOM_PORT=11113.",
        "# Lists are TOML arrays in this file and comma-separated in the environment.",
    ]
    section = None
    for s in SETTINGS:
        if s.section != section:
            section = s.section
            lines += ["", f"[{section}]"]
        lines.append(f"# {s.help}  (env: {s.env_name})")
        lines.append(f"# {s.key} = {_toml_value(s.default)}")
    return "\n".join(lines) + "\n"
