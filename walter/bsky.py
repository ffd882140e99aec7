"""Bluesky client: one login reused through a session file, reads from the AppView, bounded retries.

The PDS answers the logins, the AppView the app.bsky.* reads; every read returns wire-shaped dicts checked
one item at a time, so one malformed post costs that post. Sessions, retries and validation: docs/walter.md
("The modules, in detail").
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import httpx
from atproto import Session, models
from atproto_client.client.raw import ClientRaw
from atproto_client.exceptions import (
    ModelError,
    NetworkError,
    RateLimitExceededError,
    RequestErrorBase,
    RequestException,
)
from atproto_client.models.common import XrpcError
from atproto_client.models.utils import get_model_as_dict, get_or_create
from atproto_client.request import Request
from atproto_server.auth.jwt import get_jwt_payload
from atproto_server.exceptions import TokenDecodeError

from varro.engine.core.errors import UserError
from varro.engine.core.paths import home_dir

log = logging.getLogger(__name__)

DEFAULT_PDS_URL = "https://bsky.social"
# Signed-in app.bsky.* reads go through the PDS, which proxies them to the AppView
# (Bluesky's "API Hosts and Auth"); WALTER_APPVIEW_URL points them elsewhere.
DEFAULT_APPVIEW_URL = DEFAULT_PDS_URL
HANDLE_ENV = "BSKY_HANDLE"
PASSWORD_ENV = "BSKY_APP_PASSWORD"
PDS_URL_ENV = "WALTER_PDS_URL"
APPVIEW_URL_ENV = "WALTER_APPVIEW_URL"
SESSION_FILE = "bsky_session"
MAX_URIS_PER_CALL = 25  # getPosts and getProfiles accept at most 25 at a time
REFRESH_MARGIN_S = 300.0  # renew an access token this long before its exp claim
AUTH_ERRORS = {"ExpiredToken", "InvalidToken", "AuthenticationRequired", "AuthMissing"}
REPOST_REASON = "app.bsky.feed.defs#reasonRepost"

T = TypeVar("T")
# Told of each item a read rejects: (its at-uri, or None when it has none; one line saying why).
OnInvalid = Callable[[str | None, str], None]


class BlueskyError(RuntimeError, UserError):
    """A Bluesky call failed; the message names the call, the host and what came back."""


class BlueskyConfigError(BlueskyError, ValueError):
    """Credentials or base URLs are missing or invalid."""


class BlueskyAuthError(BlueskyError):
    """Login was rejected, or the session stayed rejected after one refresh / re-login."""


class BlueskyRateLimitError(BlueskyError):
    """429 and the reset is further away than the wait cap, or the retries ran out."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class BlueskyUnavailableError(BlueskyError):
    """5xx answers, timeouts or network failures outlasted the bounded retries."""


class BlueskyResponseError(BlueskyError):
    """The answer was not the JSON the lexicon describes (malformed, wrong shape)."""


class BlueskyRequestError(BlueskyError):
    """Any other 4xx: the request itself is wrong or forbidden; retrying will not help."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BlueskyConfig:
    pds_url: str = DEFAULT_PDS_URL  # createSession / refreshSession host
    appview_url: str = DEFAULT_APPVIEW_URL  # app.bsky.* read host
    timeout_s: float = 20.0  # per request (connect, read, write)
    max_retries: int = 3  # extra attempts after a 5xx, timeout, network error or 429
    backoff_s: float = 2.0  # first retry wait; doubles each attempt
    max_wait_s: float = 900.0  # longest rate-limit wait honoured; a later reset raises instead

    def __post_init__(self) -> None:
        for name in ("pds_url", "appview_url"):
            url = getattr(self, name)
            parts = httpx.URL(url)
            if parts.scheme not in ("http", "https") or not parts.host:
                raise BlueskyConfigError(f"{name} must be an http(s) URL, got {url!r}")
        if self.max_retries < 0 or self.timeout_s <= 0 or self.max_wait_s < 0 or self.backoff_s < 0:
            raise BlueskyConfigError(
                f"invalid limits: max_retries={self.max_retries}, timeout_s={self.timeout_s}, "
                f"backoff_s={self.backoff_s}, max_wait_s={self.max_wait_s}"
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> "BlueskyConfig":
        """The defaults with WALTER_PDS_URL / WALTER_APPVIEW_URL applied, then `overrides`."""
        values: dict[str, Any] = {
            "pds_url": os.environ.get(PDS_URL_ENV) or DEFAULT_PDS_URL,
            "appview_url": os.environ.get(APPVIEW_URL_ENV) or DEFAULT_APPVIEW_URL,
        }
        values.update(overrides)
        return cls(**values)


def no_credentials(session_file: Path) -> BlueskyConfigError:
    return BlueskyConfigError(
        f"no usable Bluesky session in {session_file} and {HANDLE_ENV} / {PASSWORD_ENV} "
        "are not both set: create an app password in Bluesky's settings and export both")


def check_credentials(home: str | Path | None = None) -> None:
    """Before any work: a stored session or both credentials; raises BlueskyConfigError otherwise. (A
    session that turns out stale is renewed, or refused, at the first call.)"""
    if session_path(home).is_file():
        return
    if not (os.environ.get(HANDLE_ENV) or "").strip() or not os.environ.get(PASSWORD_ENV):
        raise no_credentials(session_path(home))


def session_path(home: str | Path | None = None) -> Path:
    """Where the session string is kept: <home>/data/bsky_session."""
    return home_dir(home) / "data" / SESSION_FILE


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600, atomically (a temp file created 0600, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older temp file keeps its mode through O_CREAT
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _xrpc_error(error: RequestErrorBase) -> str | None:
    content = error.response.content if error.response is not None else None
    return content.error if isinstance(content, XrpcError) else None


def _is_auth_rejection(error: RequestErrorBase) -> bool:
    """401, or the PDS's 400 ExpiredToken / InvalidToken: the token, not the request, is wrong."""
    if error.response is None:
        return False
    status = error.response.status_code
    return status == 401 or (status == 400 and _xrpc_error(error) in AUTH_ERRORS)


def _invalid_answer(error: Exception, at: tuple[str | int, ...] = ()) -> str:
    """One line for an answer the SDK could not read: pydantic's 'field.path: problem' pairs, else the message.

    `at` is the path of the validated part inside the answer (('posts', 3) for one post).
    pydantic's own text spans several lines, quotes the input and ends in a help URL;
    the CLI prints errors as one line.
    """
    cause = error.__cause__ if isinstance(error, ModelError) else error
    if callable(getattr(cause, "errors", None)):  # a pydantic ValidationError (the SDK's models are pydantic)
        problems = [f"{'.'.join(str(part) for part in (*at, *d['loc'])) or 'answer'}: {d['msg']}"
                    for d in cause.errors()]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        return "; ".join(problems[:3]) + more
    return " ".join(str(error).split())


UNKNOWN_HANDLE = "handle.invalid"  # the AppView's own handle for an account whose handle it cannot verify


def with_lexicon_defaults(value: Any) -> Any:
    """A copy of `value` where an author without a handle gets UNKNOWN_HANDLE and an external card
    without a title or description gets "", so the lexicon's validation keeps a post still usable."""
    if isinstance(value, list):
        return [with_lexicon_defaults(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: with_lexicon_defaults(v) for k, v in value.items()}
    if isinstance(out.get("author"), dict) and "did" in out["author"]:
        out["author"].setdefault("handle", UNKNOWN_HANDLE)
    if isinstance(out.get("external"), dict) and "uri" in out["external"]:
        out["external"].setdefault("title", "")
        out["external"].setdefault("description", "")
    return out


def without_unknown_handles(value: Any) -> Any:
    """`value` (a validated item, changed in place) with every author's UNKNOWN_HANDLE removed: no handle is
    known, and none is invented."""
    if isinstance(value, list):
        for v in value:
            without_unknown_handles(v)
    elif isinstance(value, dict):
        author = value.get("author")
        if isinstance(author, dict) and author.get("handle") == UNKNOWN_HANDLE:
            del author["handle"]
        for v in value.values():
            without_unknown_handles(v)
    return value


def _item_uri(item: Any) -> str | None:
    """The at-uri of a post view or feed item as sent, when it has a string one."""
    if isinstance(item, dict):
        uri = (item.get("post") if isinstance(item.get("post"), dict) else item).get("uri")
        return uri if isinstance(uri, str) and uri else None
    return None


def _status(error: RequestErrorBase | httpx.TransportError) -> int | None:
    response = getattr(error, "response", None)  # httpx's transport errors have none
    return response.status_code if response is not None else None


class Bluesky:
    """The Bluesky calls Walter makes. Logs in lazily on the first call.

    `sleep` and `clock` (epoch seconds) are injectable so tests neither wait nor
    depend on the wall clock. Results are plain dicts (see the module docstring).
    """

    def __init__(
        self,
        config: BlueskyConfig | None = None,
        *,
        home: str | Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or BlueskyConfig.from_env()
        self.session_file = session_path(home)
        self._sleep = sleep
        self._clock = clock
        timeout = httpx.Timeout(self.config.timeout_s)
        self._pds = ClientRaw(self.config.pds_url, request=Request(timeout=timeout))
        self._appview = ClientRaw(self.config.appview_url, request=Request(timeout=timeout))
        self._session: Session | None = None
        self._recovered = False  # the one recovery after a rejected token has been used
        self._proactive = True  # renew ahead of exp; off if fresh tokens already look expired

    def __repr__(self) -> str:
        who = self._session.handle if self._session else None
        return f"Bluesky(handle={who!r}, pds_url={self.config.pds_url!r}, appview_url={self.config.appview_url!r})"

    def close(self) -> None:
        self._pds.request.close()
        self._appview.request.close()

    def __enter__(self) -> "Bluesky":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads -----------------------------------------------------------------

    def search_posts(
        self,
        q: str | None = None,
        url: str | None = None,
        domain: str | None = None,
        since: str | None = None,
        until: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
        sort: str = "latest",
        on_invalid: OnInvalid | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of app.bsky.feed.searchPosts: (post views, next cursor or None when done).

        `q` is required by the lexicon; None searches "*" so the url / domain filter decides.
        A post the lexicon rejects goes to `on_invalid` (see the module docstring).
        """
        nsid = "app.bsky.feed.searchPosts"
        params = models.AppBskyFeedSearchPosts.Params(
            q=q or "*", url=url, domain=domain, since=since, until=until, cursor=cursor, limit=limit, sort=sort
        )
        page = self._query(nsid, params)
        return self._items(nsid, page, "posts", models.AppBskyFeedDefs.PostView, on_invalid), self._cursor(nsid, page)

    def get_posts(self, uris: list[str], on_invalid: OnInvalid | None = None) -> list[dict[str, Any]]:
        """Post views of `uris` (any number; sent 25 at a time). A deleted post is simply absent; a post the
        lexicon rejects goes to `on_invalid`."""
        return self._in_batches("app.bsky.feed.getPosts", uris, "posts", models.AppBskyFeedDefs.PostView,
                                lambda part: models.AppBskyFeedGetPosts.Params(uris=part), on_invalid)

    def get_author_feed(
        self, did: str, cursor: str | None = None, limit: int = 100, on_invalid: OnInvalid | None = None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the author's own posts (filter posts_no_replies, reposts dropped): (feed items, cursor).

        Each item is {"post": post view, ...}; the cursor is None when the feed is exhausted. An item the
        lexicon rejects goes to `on_invalid`.
        """
        nsid = "app.bsky.feed.getAuthorFeed"
        params = models.AppBskyFeedGetAuthorFeed.Params(
            actor=did, cursor=cursor, limit=limit, filter="posts_no_replies"
        )
        page = self._query(nsid, params)
        items = self._items(nsid, page, "feed", models.AppBskyFeedDefs.FeedViewPost, on_invalid)
        own = [i for i in items if (i.get("reason") or {}).get("$type") != REPOST_REASON]
        return own, self._cursor(nsid, page)

    def get_profiles(self, dids: list[str]) -> list[dict[str, Any]]:
        """Detailed profiles of `dids` (any number; sent 25 at a time). Unknown accounts are absent."""
        return self._in_batches("app.bsky.actor.getProfiles", dids, "profiles",
                                models.AppBskyActorDefs.ProfileViewDetailed,
                                lambda part: models.AppBskyActorGetProfiles.Params(actors=part), None)

    # -- one page, item by item ------------------------------------------------------

    def _in_batches(self, nsid: str, keys: list[str], field: str, model: type,
                    params: Callable[[list[str]], Any], on_invalid: OnInvalid | None) -> list[dict[str, Any]]:
        """`_items` of the answers to `nsid` for `keys`, asked MAX_URIS_PER_CALL at a time (`params` makes a
        call's parameters from its keys)."""
        items: list[dict[str, Any]] = []
        for start in range(0, len(keys), MAX_URIS_PER_CALL):
            page = self._query(nsid, params(keys[start:start + MAX_URIS_PER_CALL]))
            items.extend(self._items(nsid, page, field, model, on_invalid))
        return items

    def _query(self, nsid: str, params: Any) -> dict[str, Any]:
        """The JSON object an AppView query answered, unvalidated (the SDK's raw call, through `_read`)."""
        response = self._read(nsid, lambda h: self._appview.invoke_query(
            nsid, params=params, output_encoding="application/json", headers=h))
        if not isinstance(response.content, dict):
            raise BlueskyResponseError(f"{nsid} at {self.config.appview_url} sent an answer that is not valid: "
                                       "not a JSON object")
        return response.content

    def _items(self, nsid: str, page: dict[str, Any], field: str, model: type,
               on_invalid: OnInvalid | None) -> list[dict[str, Any]]:
        """`page[field]`'s items that `model` accepts, as dicts; each rejected one goes to `on_invalid`
        (None: raises BlueskyResponseError). A page without the list is a BlueskyResponseError."""
        where = f"{nsid} at {self.config.appview_url}"
        items = page.get(field)
        if not isinstance(items, list):
            raise BlueskyResponseError(f"{where} sent an answer that is not valid: {field}: "
                                       + ("Field required" if items is None else "Input should be a valid list"))
        kept = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise ModelError(f"{field}.{i}: Input should be an object")
                checked = get_or_create(with_lexicon_defaults(item), model, strict=True)
                kept.append(without_unknown_handles(get_model_as_dict(checked)))
            except ModelError as e:
                problem = f"{where} sent an item that is not valid: {_invalid_answer(e, (field, i))}"
                if on_invalid is None:
                    raise BlueskyResponseError(problem.replace("an item", "an answer", 1)) from e
                log.warning("skipping an item: %s", problem)
                on_invalid(_item_uri(item), problem)
        return kept

    def _cursor(self, nsid: str, page: dict[str, Any]) -> str | None:
        cursor = page.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise BlueskyResponseError(f"{nsid} at {self.config.appview_url} sent an answer that is not valid: "
                                       f"cursor: Input should be a valid string, got {type(cursor).__name__}")
        return cursor or None

    # -- the call loop -----------------------------------------------------------

    def _read(self, nsid: str, call: Callable[[dict[str, str]], T]) -> T:
        """Run one AppView call with the access token: retries, rate-limit waits, one auth recovery."""
        self._ensure_session()
        host = self.config.appview_url
        while True:
            try:
                return self._with_transient_retries(nsid, host, lambda: call(self._auth_headers()))
            except _AuthRejected as rejected:
                if self._recovered:
                    raise BlueskyAuthError(
                        f"{nsid} at {host} still rejected the session after one refresh / re-login "
                        f"({rejected.detail}); check {HANDLE_ENV}, the app password and {APPVIEW_URL_ENV}"
                    ) from rejected.__cause__
                self._recovered = True
                log.warning("%s at %s rejected the session (%s); renewing it once", nsid, host, rejected.detail)
                self._renew(reason=rejected.detail)

    def _with_transient_retries(self, nsid: str, host: str, call: Callable[[], T]) -> T:
        """`call` with bounded retries for 5xx, timeouts, network errors, bodies that do not parse and 429;
        raises typed errors."""
        retries = self.config.max_retries
        attempt = 0
        while True:
            try:
                return call()
            except RateLimitExceededError as e:
                wait = self._rate_limit_wait(e, attempt)
                if wait > self.config.max_wait_s:
                    raise BlueskyRateLimitError(
                        f"{nsid} at {host} is rate-limited for {wait:.0f} s more (cap {self.config.max_wait_s:.0f} s)",
                        wait_s=wait,
                    ) from e
                if attempt >= retries:
                    raise BlueskyRateLimitError(
                        f"{nsid} at {host} still rate-limited after {attempt + 1} attempts", wait_s=wait
                    ) from e
                log.warning("%s at %s: 429, waiting %.1f s (attempt %d)", nsid, host, wait, attempt + 1)
            except (NetworkError, RequestException, httpx.TransportError) as e:
                # NetworkError: transport, timeouts, 502. The SDK lets some httpx errors through
                # unwrapped, e.g. RemoteProtocolError for a connection closed mid-answer.
                status = _status(e)
                if status is not None and status < 500:
                    if _is_auth_rejection(e):
                        raise _AuthRejected(f"{status} {_xrpc_error(e) or ''}".strip()) from e
                    raise BlueskyRequestError(f"{nsid} at {host} answered {e}", status=status) from e
                what = f"{status}" if status is not None else type(e).__name__
                if attempt >= retries:
                    raise BlueskyUnavailableError(
                        f"{nsid} at {host} failed {attempt + 1} times, last with {what}"
                    ) from e
                wait = self.config.backoff_s * 2**attempt
                log.warning("%s at %s: %s, retrying in %.1f s (attempt %d)", nsid, host, what, wait, attempt + 1)
            except RequestErrorBase as e:  # UnauthorizedError (401/403), BadRequestError (400)
                if _is_auth_rejection(e):
                    raise _AuthRejected(f"{_status(e)} {_xrpc_error(e) or ''}".strip()) from e
                raise BlueskyRequestError(f"{nsid} at {host} answered {e}", status=_status(e)) from e
            except ModelError as e:  # parsed, but not the shape the lexicon gives: asking again will not help
                raise BlueskyResponseError(
                    f"{nsid} at {host} sent an answer that is not valid: {_invalid_answer(e)}"
                ) from e
            except ValueError as e:  # pydantic_core could not parse the JSON: usually a cut connection
                if attempt >= retries:
                    raise BlueskyResponseError(
                        f"{nsid} at {host} sent an answer that is not valid: {_invalid_answer(e)} "
                        f"({attempt + 1} attempts)"
                    ) from e
                wait = self.config.backoff_s * 2**attempt
                log.warning("%s at %s: a body that does not parse, retrying in %.1f s (attempt %d)",
                            nsid, host, wait, attempt + 1)
            self._sleep(wait)
            attempt += 1

    def _rate_limit_wait(self, error: RateLimitExceededError, attempt: int) -> float:
        """Seconds until the window resets: ratelimit-reset (epoch s), else Retry-After, else backoff."""
        if error.reset_at is not None:
            return max(error.reset_at.timestamp() - self._clock(), 1.0)
        if error.retry_after is not None:
            return max(error.retry_after, 1.0)
        return self.config.backoff_s * 2**attempt

    # -- the session ---------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        assert self._session is not None
        return {"Authorization": f"Bearer {self._session.access_jwt}"}

    def _ensure_session(self) -> None:
        if self._session is None:
            self._session = self._load_session()
            if self._session is None:
                self._create_session()
                return
        if self._proactive and self._expires_soon(self._session.access_jwt):
            self._renew(reason="access token about to expire")
            if self._expires_soon(self._session.access_jwt):
                log.warning("a fresh access token already looks expired (clock skew?); renewing only on rejection")
                self._proactive = False

    def _expires_soon(self, jwt: str) -> bool:
        try:
            exp = get_jwt_payload(jwt).exp
        except TokenDecodeError:
            return False  # not a JWT we can read: let the server decide
        return exp is not None and exp - REFRESH_MARGIN_S <= self._clock()

    def _load_session(self) -> Session | None:
        """The stored session when it exists, parses and belongs to BSKY_HANDLE; else None."""
        path = self.session_file
        if not path.exists():
            return None
        os.chmod(path, 0o600)
        text = path.read_text().strip()
        try:
            session = Session.decode(text)
        except ValueError:
            log.warning("ignoring unreadable session file %s; logging in again", path)
            return None
        wanted = (os.environ.get(HANDLE_ENV) or "").strip().lstrip("@").lower()
        if wanted and "@" not in wanted and wanted not in (session.handle.lower(), session.did.lower()):
            log.info("session file %s is for %s, not %s; logging in again", path, session.handle, wanted)
            return None
        log.info("reusing the Bluesky session of %s from %s", session.handle, path)
        return session

    def _save(self, session: Session) -> None:
        self._session = session
        write_private(self.session_file, session.encode())

    def _renew(self, reason: str) -> None:
        """refreshSession with the refresh token; createSession when that is rejected too."""
        assert self._session is not None
        host = self.config.pds_url
        refresh = self._session.refresh_jwt
        try:
            answer = self._with_transient_retries(
                "com.atproto.server.refreshSession", host,
                lambda: self._pds.com.atproto.server.refresh_session(headers={"Authorization": f"Bearer {refresh}"}),
            )
        except _AuthRejected as rejected:
            log.warning("refreshSession at %s rejected (%s) after %s; logging in again", host, rejected.detail, reason)
            self._create_session()
            return
        self._save(Session(answer.handle, answer.did, answer.access_jwt, answer.refresh_jwt, host))
        log.info("refreshed the Bluesky session of %s (%s)", answer.handle, reason)

    def _create_session(self) -> None:
        """createSession with BSKY_HANDLE / BSKY_APP_PASSWORD; the password stays in this frame."""
        handle = (os.environ.get(HANDLE_ENV) or "").strip()
        if not handle or not os.environ.get(PASSWORD_ENV):
            raise no_credentials(self.session_file)
        host = self.config.pds_url
        data = models.ComAtprotoServerCreateSession.Data(identifier=handle, password=os.environ[PASSWORD_ENV])
        try:
            answer = self._with_transient_retries(
                "com.atproto.server.createSession", host, lambda: self._pds.com.atproto.server.create_session(data)
            )
        except _AuthRejected as rejected:
            raise BlueskyAuthError(
                f"createSession at {host} rejected {HANDLE_ENV}={handle!r} ({rejected.detail}): "
                f"check the handle and that {PASSWORD_ENV} holds a valid app password"
            ) from None  # the SDK error is summarised above; nothing of the request is chained
        except BlueskyRequestError as e:
            raise BlueskyAuthError(f"createSession at {host} for {handle!r} failed: {e}") from None
        self._save(Session(answer.handle, answer.did, answer.access_jwt, answer.refresh_jwt, host))
        log.info("logged in to %s as %s; session stored in %s", host, answer.handle, self.session_file)


class _AuthRejected(Exception):
    """Internal: the token was rejected; `detail` is the status and XRPC error name."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
