"""Options every provider that talks HTTP(S) to its source shares: the TLS settings, and the
check of a token that goes into a header. As in Prometheus, one HTTP client configuration,
so that `ca_file` means the same to every source."""

from __future__ import annotations

import urllib.parse
from typing import Any

from pydantic import Field, model_validator

from syncer.options import ConfigPath, ProviderOptions


def split_http_url(text: str, *, credentials_instead: str) -> urllib.parse.SplitResult:
    """The one check of a source's http(s) URL: the scheme, no credentials in it (never
    echoed: use `credentials_instead`), a port that is a number, a host."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http:// or https:// URL, got scheme {parts.scheme!r}")
    if "@" in parts.netloc:
        raise ValueError(f"credentials in the URL are not supported; use {credentials_instead}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"the port in {text!r} is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"no host in {text!r}")
    return parts


def header_value_problem(text: str) -> str | None:
    """A token must be visible ASCII: anything else cannot be sent in a header, and the HTTP
    libraries quote a header value they refuse in their error."""
    if text and all("!" <= c <= "~" for c in text):
        return None
    return "the token is empty or holds spaces or non-ASCII characters"


class TlsOptions(ProviderOptions):
    """`ca_file`, `cert_file`, `key_file` and `verify`, checked together with the options'
    `url` (a subclass declares `url: str`)."""

    ca_file: ConfigPath | None = Field(default=None)
    """CA bundle that signs the server's certificate (https)."""
    cert_file: ConfigPath | None = Field(default=None)
    """Client certificate (https)."""
    key_file: ConfigPath | None = Field(default=None)
    """The client certificate's key (needs cert_file; default: in cert_file)."""
    verify: bool = Field(default=True, strict=True)
    """Verify the server's TLS certificate and host name."""

    @model_validator(mode="after")
    def _tls_consistent(self) -> Any:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        if self.ca_file is not None and not self.verify:
            raise ValueError("ca_file has no use with verify: false")
        tls = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is not None]
        url = str(getattr(self, "url", ""))
        if tls and not url.lower().startswith("https://"):
            raise ValueError(f"{tls[0]} needs an https:// url, got {url}")
        return self

    def tls_files(self) -> list[tuple[str, ConfigPath]]:
        """(option, path) of every TLS file set, for local checks."""
        return [(n, p) for n in ("ca_file", "cert_file", "key_file")
                if (p := getattr(self, n)) is not None]
