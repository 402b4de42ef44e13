"""How a client reaches the cluster: endpoints, TLS files, the token, timeouts.
Read from arguments first, then the same environment the `autoglm` CLI reads
(``AUTOGLM_ENDPOINTS``, ``AUTOGLM_TOKEN``, ``AUTOGLM_CA_FILE``,
``AUTOGLM_CERT_FILE``, ``AUTOGLM_KEY_FILE``, ``AUTOGLM_INSECURE``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from .errors import InvalidArgument


@dataclass(frozen=True)
class Settings:
    endpoints: tuple[str, ...]
    token: str | None
    #: PEM bytes of the cluster CA, and of this user's certificate and key.
    root_certificates: bytes | None
    certificate_chain: bytes | None
    private_key: bytes | None
    insecure: bool
    #: How long one call may keep retrying across replicas, seconds.
    deadline: float
    #: How long one try may take, seconds.
    attempt_timeout: float
    #: Who submits: rate limits and idempotency keys are per client id.
    client_id: str

    @classmethod
    def resolve(
        cls,
        endpoints: str | Sequence[str] | None = None,
        *,
        token: str | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        cert_file: str | os.PathLike[str] | None = None,
        key_file: str | os.PathLike[str] | None = None,
        insecure: bool | None = None,
        deadline: float = 10.0,
        attempt_timeout: float = 5.0,
        client_id: str = "python",
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ

        def from_env(name: str) -> str | None:
            value = env.get(name, "")
            return value or None

        raw = endpoints if endpoints is not None else from_env("AUTOGLM_ENDPOINTS")
        if raw is None:
            raise InvalidArgument("endpoints: none given (pass them or set AUTOGLM_ENDPOINTS)")
        listed = raw.split(",") if isinstance(raw, str) else list(raw)
        cleaned = tuple(e.strip() for e in listed if e.strip())
        if not cleaned:
            raise InvalidArgument("endpoints: empty")
        for e in cleaned:
            if "://" in e or ":" not in e:
                raise InvalidArgument(f"endpoints: '{e}' is not host:port")
        if insecure is None:
            insecure = (from_env("AUTOGLM_INSECURE") or "").lower() in ("1", "true")
        token = token if token is not None else from_env("AUTOGLM_TOKEN")
        if token is not None and not (token.isascii() and token.isprintable()):
            raise InvalidArgument("token: must be printable ASCII")
        ca = ca_file if ca_file is not None else from_env("AUTOGLM_CA_FILE")
        cert = cert_file if cert_file is not None else from_env("AUTOGLM_CERT_FILE")
        key = key_file if key_file is not None else from_env("AUTOGLM_KEY_FILE")
        if (cert is None) != (key is None):
            raise InvalidArgument("cert_file and key_file: give both or neither")
        if not insecure and ca is None:
            raise InvalidArgument(
                "ca_file: required for TLS (set AUTOGLM_CA_FILE, or insecure=True "
                "for a plaintext cluster)"
            )
        if deadline <= 0 or attempt_timeout <= 0:
            raise InvalidArgument("deadline and attempt_timeout: must be positive")
        return cls(
            endpoints=cleaned,
            token=token,
            root_certificates=None if insecure else _read("ca_file", ca),
            certificate_chain=None if insecure else _read("cert_file", cert),
            private_key=None if insecure else _read("key_file", key),
            insecure=insecure,
            deadline=deadline,
            attempt_timeout=attempt_timeout,
            client_id=client_id,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for a plaintext cluster."""
        if self.insecure:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _read(field: str, path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidArgument(f"{field}: {path}: {e.strerror}") from None
