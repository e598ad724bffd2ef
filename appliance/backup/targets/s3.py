"""An S3 target, ``s3://bucket/prefix`` on AWS or any S3-compatible store (``s3_endpoint_url``).

Atomic put: one PUT, or a multipart upload that becomes visible only when
completed; both are atomic in S3 semantics. A source of the wrong length fails
inside the read, so the upload is never completed.

Options: ``s3_endpoint_url``, ``s3_region``, ``s3_access_key_file`` and
``s3_secret_key_file`` (files holding the keys; when empty, boto3's usual
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or ~/.aws files). Never in the URL.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from ...errors import ConfigError
from .base import ExactReader, TargetError, check_name

NOT_FOUND = ("NoSuchKey", "404", "NotFound")
CREDENTIALS_REFUSED = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403",
                       "InvalidToken", "ExpiredToken")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str


class S3Target:
    SCHEMES = ("s3",)
    OPTIONS = ("s3_endpoint_url", "s3_region", "s3_access_key_file", "s3_secret_key_file")
    EXAMPLE = "s3://bucket/prefix"

    def __init__(self, bucket: str, prefix: str, endpoint_url: str = "", region: str = "",
                 access_key: str | None = None, secret_key: str | None = None, page_size: int = 1000):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config as BotoConfig

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.page_size = page_size
        self.url = f"s3://{bucket}/{self.prefix}" + (f" at {endpoint_url}" if endpoint_url else "")
        session = boto3.session.Session()
        self.client = session.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32),
        )
        # Large objects go multipart (visible only once completed); no extra threads: we run our own pool.
        self.transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=16 << 20, use_threads=False)

    # -- settings --------------------------------------------------------------
    @classmethod
    def parse_url(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            raise ConfigError("put no credentials in the S3 URL: use [backup] s3_access_key_file and "
                              "s3_secret_key_file")
        if not parts.hostname:
            raise ConfigError(f"S3 target {url!r} must look like s3://bucket/prefix")
        return S3Location(parts.netloc, unquote(parts.path))

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> "S3Target":
        where = cls.parse_url(url)
        try:
            access = _read_secret(options.get("s3_access_key_file") or "")
            secret = _read_secret(options.get("s3_secret_key_file") or "")
        except OSError as exc:
            raise ConfigError(f"cannot read the S3 credentials file: {exc}") from None
        return cls(where.bucket, where.prefix, options.get("s3_endpoint_url") or "",
                   options.get("s3_region") or "", access, secret)

    # -- the Target interface ---------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc, what: str) -> TargetError:
        from botocore.exceptions import ClientError, NoCredentialsError

        hint = ""
        if isinstance(exc, NoCredentialsError):
            hint = ": set [backup] s3_access_key_file and s3_secret_key_file"
        elif isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in CREDENTIALS_REFUSED:
                hint = (": the storage refused the credentials; check [backup] s3_access_key_file and "
                        "s3_secret_key_file and that the key may use this bucket")
            elif code == "NoSuchBucket":
                hint = f": the bucket {self.bucket!r} does not exist; create it first"
        return TargetError(f"S3 {what} failed at {self.url}: {exc}{hint}")

    def put(self, name: str, src: BinaryIO, size: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        reader = ExactReader(src, size, check_name(name))
        try:
            self.client.upload_fileobj(reader, self.bucket, self._key(name), Config=self.transfer)
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"upload of {name}") from None

    def open(self, name: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(check_name(name)))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NOT_FOUND:
                raise FileNotFoundError(name) from None
            raise self._error(exc, f"download of {name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"download of {name}") from None

    def size(self, name: str) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(check_name(name)))["ContentLength"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in NOT_FOUND:
                return None
            raise self._error(exc, f"stat of {name}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"stat of {name}") from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = check_name(prefix, prefix=True)
        start = len(self.prefix) + 1 if self.prefix else 0
        under = self._key(prefix) + "/" if prefix else self._key("")
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=under, PaginationConfig={"PageSize": self.page_size}):
                for item in page.get("Contents", ()):
                    yield item["Key"][start:], item["Size"]
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, "listing") from None

    def delete(self, name: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(check_name(name)))
        except (BotoCoreError, ClientError) as exc:
            raise self._error(exc, f"delete of {name}") from None

    def close(self) -> None:
        self.client.close()


def _read_secret(path: str) -> str | None:
    return Path(path).read_text(encoding="utf-8").strip() if path else None
