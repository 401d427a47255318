"""What the MD5 token of each nginx-signed URL form covers, shared by the signer
(`pipeline/signing.py`) and the edge configurations that check it (`config/edge.py`,
`config/nginx/edge-minio.conf.template`).

Each form signs its own domain label first, so a token made for one form is never
valid for another: before the labels, a package's token was also a valid file token
for the key that is the package's prefix, since both signed "{expires}/{path}
{secret}". The playback sessions' session-bound package URLs have a label of their own.
"""

from __future__ import annotations

from enum import StrEnum


class TokenDomain(StrEnum):
    """The label each URL form's token signs ahead of its expiry and path."""

    FILE = "mediamill-file"
    PACKAGE = "mediamill-package"
    SESSION = "mediamill-session"  # a package, for one playback session


def token_input(domain: TokenDomain, expires: int | str, path: str, secret: str) -> str:
    """The text whose MD5 is the token: "{domain}:{expires}/{path} {secret}". `path`
    has no leading slash (a key, or a package prefix); nginx builds the same text from
    its variables (`nginx_token_input`)."""
    return f"{domain.value}:{expires}/{path} {secret}"


def nginx_token_input(domain: TokenDomain, expires_var: str, path_var: str, secret: str) -> str:
    """`token_input` as an nginx `secure_link_md5` expression: `expires_var` and
    `path_var` are nginx variables, `path_var` starting with the slash."""
    return f"{domain.value}:{expires_var}{path_var} {secret}"
