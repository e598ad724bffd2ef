"""``pacs-appliance init``: create a data directory with its keys, index, archive and first admin."""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from . import config as config_mod
from .archive import Archive, KeyStore
from .archive.fsutil import write_file_atomic
from .archive.keys import format_recovery_key
from .errors import DataDirError
from .index import Index, check_url as check_index_url
from .records import accounts


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    admin_user: str
    admin_password: str  # shown once, never stored in the clear
    password_generated: bool
    recovery_key: str  # shown once; also exportable by an admin later


def is_initialized(data_dir: Path) -> bool:
    return KeyStore(Path(data_dir) / "keys").exists()


def initialize(data_dir: Path, admin_password: str | None = None, admin_user: str = "admin",
               config_text: str | None = None) -> InitResult:
    """Create a data directory; refuse if it already holds keys."""
    data_dir = Path(data_dir)
    if is_initialized(data_dir):
        raise DataDirError(f"{data_dir} is already initialised (it holds keys); refusing to overwrite them")
    generated = admin_password is None
    if generated:
        admin_password = secrets.token_urlsafe(12)
    accounts.validate(admin_user, admin_password, "admin")

    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o750)
    cfg_path = data_dir / config_mod.CONFIG_FILE_NAME
    if not cfg_path.exists():
        write_file_atomic(cfg_path, (config_text or config_mod.render_documented_defaults()).encode())  # 0600
    cfg = config_mod.load(data_dir, env={})
    idx = config_mod.load(data_dir).index  # PACS_INDEX_URL may name a PostgreSQL index
    if idx.url:
        check_index_url(idx.url, idx.allow_insecure)  # refused before any key is made

    keyring, recovery_key = KeyStore(cfg.keys_dir).create()
    Archive(cfg.archive_dir, keyring).create_dirs()
    cfg.inbox_dir.mkdir(mode=0o750, exist_ok=True)
    _keep_index_url(cfg_path, idx)
    index = Index.open(cfg.index_path, keyring.index_key, url=idx.url, allow_insecure=idx.allow_insecure)
    try:
        index.writer.run(lambda: accounts.create_user(index.accounts, admin_user, admin_password, "admin"))
    finally:
        index.close()
    return InitResult(data_dir, admin_user, admin_password, generated, format_recovery_key(recovery_key))


def _keep_index_url(cfg_path: Path, idx) -> None:
    """A PostgreSQL index named only in the environment at init (PACS_INDEX_URL; there is no config file
    yet to name it in) is written into the new config, so serve and every command use the same index."""
    if idx.url and idx.url != config_mod.load(cfg_path.parent, env={}).index.url:
        lines = [f"url = {json.dumps(idx.url)}"] + (["allow_insecure = true"] if idx.allow_insecure else [])
        text = cfg_path.read_text()
        if "\n[index]\n" in text:
            text = text.replace("\n[index]\n", "\n[index]\n" + "\n".join(lines) + "\n", 1)
        else:
            text += "\n[index]\n" + "\n".join(lines) + "\n"
        write_file_atomic(cfg_path, text.encode())
