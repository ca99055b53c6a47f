"""Transport to one registry (OCI distribution API v2): endpoint, auth, retries, redirects.

Everything HTTP is translated into hyperrun's errors here. The Bearer token dance follows
the distribution token spec: a 401 names a realm, service and scope; we fetch a token from
the realm (with Basic credentials if we have them, and only if the realm is the registry's
own host or one configured for it) and repeat the request. Redirects are followed by hand so
that an Authorization header never reaches another host (blob storage). Every answer is read
under a deadline (transport.py), so a registry that trickles bytes cannot hold a pull.
"""

from __future__ import annotations

import base64
import logging
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import SplitResult, urljoin, urlsplit

import requests

from hyperrun.config import Config, is_loopback
from hyperrun.errors import ManifestNotFound, RegistryError, RegistryUnreachable, Unauthorized
from hyperrun.reference import DEFAULT_DOMAIN
from hyperrun.registry import answers, transport
from hyperrun.registry.credentials import Credentials, registry_host

log = logging.getLogger("hyperrun")

USER_AGENT = "hyperrun/0.1 (OCI distribution client)"
CONNECT_TIMEOUT = 10.0
MAX_REDIRECTS = 8
MAX_TOKEN_BODY = 1 << 20
# Hosts whose token service is another host by design: Docker Hub's is auth.docker.io.
BUILTIN_REALMS = {DEFAULT_DOMAIN: ("auth.docker.io",)}
# Docker Hub's name in references is docker.io, but its API is served here (docker's
# DefaultV2Registry); https://docker.io/v2/ is a website redirect, not a registry.
HUB_ENDPOINT = "https://registry-1.docker.io"
_RETRY_STATUSES = (429, 500, 502, 503, 504)
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # what can travel in an Authorization header


class _NoAuth(requests.auth.AuthBase):
    """Set as the session's auth so requests never adds ~/.netrc credentials on its own."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


@dataclass(frozen=True)
class Challenge:
    """A parsed WWW-Authenticate header."""

    scheme: str  # "bearer" or "basic"
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        scheme, _, rest = header.strip().partition(" ")
        if not scheme:
            return None
        params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
        return cls(scheme.lower(), params)


def retry_policy(total: int = 5, backoff: float = 0.5,
                 wait_cap: float = 30.0) -> transport.CappedRetry:
    """Retries with exponential backoff on refused connections and on 429 and 5xx answers;
    a Retry-After longer than wait_cap seconds is not waited for."""
    retry = transport.CappedRetry(
        total=total, connect=2, read=2, other=0, status=total, backoff_factor=backoff,
        status_forcelist=_RETRY_STATUSES, allowed_methods=frozenset({"GET", "HEAD"}),
        respect_retry_after_header=True, raise_on_status=False, redirect=0)
    retry.wait_cap = wait_cap
    return retry


class Registry:
    """A session with one registry host; use as a context manager."""

    def __init__(self, host: str, config: Config, credentials: Credentials | None = None,
                 *, endpoint: str | None = None) -> None:
        """host is `name[:port]`; endpoint (a mirror's URL) replaces https://host if given."""
        self.host = host
        self._settings_key = urlsplit(endpoint).netloc if endpoint else host
        self.settings = config.registry(self._settings_key)
        # Loopback registries may use plain HTTP themselves, but that says nothing about a
        # token server elsewhere: only an explicit `insecure` allows a plain-HTTP realm.
        explicit = config.registries.get(self._settings_key)
        self._insecure_realms = explicit is not None and explicit.insecure
        self.limits = config.pull
        self.credentials = credentials
        if endpoint is None and host == DEFAULT_DOMAIN:
            endpoint = HUB_ENDPOINT
        self._fixed_endpoint = endpoint.rstrip("/") if endpoint else None
        self._base: str | None = None
        self._tokens: dict[str, str] = {}
        self._basic = False
        self.session = requests.Session()
        self.session.auth = _NoAuth()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = transport.Adapter(
            max_retries=retry_policy(wait_cap=self.limits.retry_after_max), pool_maxsize=8)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # ---- the API -------------------------------------------------------------------------

    def login(self) -> None:
        """Check that the credentials are accepted (GET /v2/ with auth); raise Unauthorized."""
        resp = self._request("GET", "/v2/", scope=None)
        resp.close()
        if resp.status_code != 200:
            raise self._error(resp, "login")

    def manifest(self, repo: str, reference: str, accept: str, cap: int) -> tuple[bytes, str]:
        """(body, Content-Type) of a manifest by tag or digest; bodies over cap are refused."""
        what = f"{self.host}/{repo}" + (f"@{reference}" if ":" in reference else f":{reference}")
        resp = self._request("GET", f"/v2/{repo}/manifests/{reference}", scope=_pull(repo),
                             headers={"Accept": accept})
        with resp:
            if resp.status_code != 200:
                raise self._error(resp, f"manifest for {what}")
            body = answers.read_capped(resp, cap, f"manifest for {what}", self.limits)
            content_type = answers.bounded(
                resp.headers.get("Content-Type", "").split(";")[0].strip())
        return body, content_type

    def blob(self, repo: str, digest: str) -> requests.Response:
        """A streaming response for a blob (the caller closes it, reads it with iter_blob
        and verifies the bytes)."""
        resp = self._request("GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo))
        if resp.status_code != 200:
            with resp:
                raise self._error(resp, f"blob {digest[:19]} of {self.host}/{repo}")
        return resp

    # ---- endpoint and auth ---------------------------------------------------------------

    @property
    def base(self) -> str:
        """https://host, or http://host for an insecure registry that has no TLS."""
        if self._base is None:
            self._base = self._fixed_endpoint or self._discover()
        return self._base

    def _discover(self) -> str:
        https = f"https://{self.host}"
        try:
            self._send("GET", https + "/v2/", {}).close()
            return https
        except requests.exceptions.SSLError as exc:
            # A server that speaks TLS with a certificate we do not trust is not a plain
            # HTTP server: falling back would only hide the real problem.
            if not self.settings.insecure or _caused_by(exc, ssl.SSLCertVerificationError):
                raise self._tls_error(exc) from None
            log.debug("%s: no TLS (%s); using plain HTTP", self.host, answers.reason(exc))
        except requests.exceptions.ConnectionError as exc:
            if not self.settings.insecure:
                raise self._unreachable(exc) from None
            log.debug("%s: HTTPS failed (%s); trying plain HTTP", self.host, answers.reason(exc))
        return f"http://{self.host}"

    def _request(self, method: str, path: str, scope: str | None, *,
                 headers: dict[str, str] | None = None) -> requests.Response:
        url = self.base + path
        hdrs = dict(headers or {})
        auth = self._auth_header(scope)
        if auth:
            hdrs["Authorization"] = auth
        resp = self._send(method, url, hdrs)
        if resp.status_code != 401:
            return resp
        challenge = Challenge.parse(resp.headers.get("WWW-Authenticate", ""))
        resp.close()
        if challenge is None:
            raise Unauthorized(f"unauthorized: {self.host} refused the request without a "
                               "WWW-Authenticate challenge", status_code=401)
        if challenge.scheme == "bearer":
            self._tokens[scope or ""] = self._fetch_token(challenge, scope)
        elif challenge.scheme == "basic":
            if self.credentials is None or self._basic:
                raise self._unauthorized()
            self._basic = True
        else:
            raise Unauthorized(f"unauthorized: {self.host} asks for unsupported "
                               f"{challenge.scheme!r} authentication", status_code=401)
        hdrs["Authorization"] = self._auth_header(scope) or ""
        resp = self._send(method, url, hdrs)
        if resp.status_code == 401:
            resp.close()
            raise self._unauthorized()
        return resp

    def _auth_header(self, scope: str | None) -> str | None:
        token = self._tokens.get(scope or "")
        if token:
            return f"Bearer {token}"
        if self._basic and self.credentials is not None:
            return _basic(self.credentials)
        return None

    def _fetch_token(self, challenge: Challenge, scope: str | None) -> str:
        realm = challenge.params.get("realm")
        if not realm or _web_url(realm) is None:
            raise Unauthorized(f"unauthorized: {self.host} gave no usable token realm",
                               status_code=401)
        self._check_realm(realm)
        params = {"service": challenge.params.get("service", "")}
        if scope or challenge.params.get("scope"):
            params["scope"] = scope or challenge.params["scope"]
        headers = {"Authorization": _basic(self.credentials)} if self.credentials else {}
        try:
            url = requests.Request("GET", realm, params=params).prepare().url or realm
        except requests.exceptions.RequestException:
            raise Unauthorized(f"unauthorized: {self.host} gave an invalid token realm "
                               f"{answers.bounded(realm, 80)}", status_code=401) from None
        log.debug("token from %s", url)
        resp = self._send("GET", url, headers)
        with resp:
            if resp.status_code in (401, 403):
                raise self._unauthorized()
            if resp.status_code != 200:
                raise self._error(resp, f"token for {self.host}")
            body = answers.read_capped(resp, MAX_TOKEN_BODY, f"token for {self.host}",
                                        self.limits)
        doc = answers.parse_json(body) if body else {}
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise RegistryError(f"the token server of {self.host} sent no usable token",
                                hint="the registry's token service is misbehaving")
        return token

    def _check_realm(self, realm: str) -> None:
        """Refuse a token realm that would expose the token or our credentials.

        A plain-HTTP realm of an HTTPS registry hands the token to anyone on the path.
        Credentials go only to the registry's own host, to hosts configured in
        registries.HOST.token_realms, and to Docker Hub's auth.docker.io; anonymous token
        requests may go anywhere (that is how Docker Hub works).
        """
        split = urlsplit(realm)
        where = answers.bounded(split.netloc, 80)
        realm_host = (split.hostname or "").lower()
        base = urlsplit(self.base)
        key = self._settings_key
        if split.scheme == "http" and base.scheme == "https" \
                and not is_loopback(realm_host) and not self._insecure_realms:
            raise Unauthorized(
                f"{self.host} sends us to a plain-HTTP token server at {where}; refused",
                hint=f"tokens over plain HTTP can be read on the way; if {key} really works "
                     f"this way, set registries.{key}.insecure in config.yaml",
                status_code=401)
        if self.credentials is None or realm_host == (base.hostname or "").lower():
            return
        allowed = set(self.settings.token_realms)
        allowed.update(BUILTIN_REALMS.get(registry_host(key), ()))
        if realm_host not in allowed:
            raise Unauthorized(
                f"refusing to send the credentials for {self.host} to the token server at "
                f"{where}, another host",
                hint=f"if {answers.bounded(realm_host, 80)} is the token service of {key}, list it "
                     f"in registries.{key}.token_realms in config.yaml",
                status_code=401)

    # ---- HTTP ------------------------------------------------------------------------------

    def _send(self, method: str, url: str, headers: dict[str, str]) -> requests.Response:
        """One request, following redirects ourselves; Authorization stays with its host.

        Bodies are always streamed, so that every read can be capped.
        """
        origin = _origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            here = _origin(url)
            verify: bool | str = True
            if here == origin and self.settings.ca is not None:
                verify = str(self.settings.ca)
            # The read timeout only backs up the deadline, which gives the clearer message.
            timeout = (CONNECT_TIMEOUT, self.limits.stall_timeout + 5)
            with transport.sending(self.limits.stall_timeout) as deadline:
                try:
                    resp = self.session.request(method, url, headers=headers, stream=True,
                                                allow_redirects=False, timeout=timeout,
                                                verify=verify)
                except requests.exceptions.SSLError:
                    if deadline.fired:
                        raise answers.stalled(url, self.limits) from None
                    raise
                except (requests.exceptions.ConnectionError,
                        requests.exceptions.Timeout) as exc:
                    if deadline.fired:
                        raise answers.stalled(url, self.limits) from None
                    raise self._unreachable(exc, url) from None
                except (requests.exceptions.RequestException, ValueError) as exc:
                    # ValueError: requests parses a redirect's Location even when it is not
                    # to follow it, and urllib refuses some (a bad IPv6 address or port).
                    raise RegistryError(f"request to {answers.bounded(urlsplit(url).netloc, 80)} "
                                        f"failed: {answers.bounded(str(exc))}") from None
            if not (resp.is_redirect and resp.headers.get("Location")):
                return resp
            location = resp.headers["Location"]
            resp.close()
            joined = _web_url(url, location)
            if joined is None:
                raise RegistryError(f"{self.host} redirected to an unsupported URL "
                                    f"{answers.bounded(location, 80)}")
            target, split = joined
            if split.scheme == "http" and urlsplit(url).scheme == "https" \
                    and not is_loopback(split.netloc):
                raise RegistryError(f"{self.host} redirected from HTTPS to plain HTTP; refused")
            if _origin(target) != here:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            log.debug("redirected to %s://%s%s", split.scheme, split.netloc, split.path)
            url = target
        raise RegistryError(f"{self.host}: too many redirects")

    # ---- errors ----------------------------------------------------------------------------

    def _unreachable(self, exc: Exception, url: str | None = None) -> RegistryUnreachable:
        where = answers.bounded(urlsplit(url).netloc, 80) if url else self.host
        if isinstance(exc, requests.exceptions.SSLError):
            return self._tls_error(exc)
        return RegistryUnreachable(
            f"cannot reach registry {where}: {answers.reason(exc)}",
            hint="check the registry address and that it is up (and the network, proxy, DNS)")

    def _tls_error(self, exc: Exception) -> RegistryUnreachable:
        return RegistryUnreachable(
            f"TLS with registry {self.host} failed: {answers.reason(exc)}",
            hint=f"if it uses its own CA, set registries.{self.host}.ca in config.yaml")

    def _unauthorized(self) -> Unauthorized:
        if self.credentials is not None:
            return Unauthorized(
                f"unauthorized: {self.host} rejected the credentials of "
                f"{self.credentials.username!r} (incorrect username or password)",
                hint=f"run `hyperrun login {self.host}` with the right ones", status_code=401)
        return Unauthorized(f"unauthorized: {self.host} requires authentication",
                            hint=f"run `hyperrun login {self.host}` first", status_code=401)

    def _error(self, resp: requests.Response, what: str) -> RegistryError:
        wait = transport.retry_after(resp.headers.get("Retry-After"))
        if resp.status_code in _RETRY_STATUSES and wait is not None \
                and wait > self.limits.retry_after_max:
            return RegistryError(
                f"{what}: {self.host} answered {resp.status_code} and asks to retry in "
                f"{answers.duration(wait)}", status_code=resp.status_code,
                hint=f"that is more than pull.retry_after_max "
                     f"({self.limits.retry_after_max:g} s); try again later")
        detail = answers.error_detail(resp, self.limits)
        reason = answers.bounded(resp.reason or "")
        if resp.status_code == 404:
            return ManifestNotFound(f"{what} not found: {detail or 'not found'}",
                                    hint="check the name and tag (`hyperrun pull NAME:TAG`)",
                                    status_code=404)
        if resp.status_code in (401, 403):
            return Unauthorized(f"{what}: access denied: {detail or reason}",
                                hint=f"the repository may not exist or may need "
                                     f"`hyperrun login {self.host}`",
                                status_code=resp.status_code)
        return RegistryError(f"{what}: {self.host} answered {resp.status_code} "
                             f"{detail or reason}", status_code=resp.status_code)

    def iter_blob(self, resp: requests.Response, what: str) -> Iterator[bytes]:
        """A blob response's body in chunks, as long as it keeps up pull.min_speed."""
        return answers.iter_blob(resp, what, self.limits)


def _web_url(url: str, relative: str = "") -> tuple[str, SplitResult] | None:
    """url (joined with relative) and its parts if it is an http(s) URL that parses;
    None if not (urllib raises ValueError for a bad IPv6 address or port)."""
    try:
        target = urljoin(url, relative)
        split = urlsplit(target)
        split.port  # noqa: B018 - only to have a bad port raise here
    except ValueError:
        return None
    return (target, split) if split.scheme in ("http", "https") and split.netloc else None


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _basic(creds: Credentials) -> str:
    pair = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _origin(url: str) -> tuple[str, str]:
    split = urlsplit(url)
    return split.scheme, split.netloc.lower()


def _caused_by(exc: BaseException, kind: type[BaseException], depth: int = 0) -> bool:
    """True if kind is anywhere in exc's causes (urllib3 nests them in args and .reason)."""
    if isinstance(exc, kind):
        return True
    if depth > 6:
        return False
    inner = [exc.__cause__, exc.__context__, getattr(exc, "reason", None), *exc.args]
    return any(isinstance(e, BaseException) and _caused_by(e, kind, depth + 1) for e in inner)
