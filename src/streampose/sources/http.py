"""One HTTP client for every remote source: project User-Agent, timeouts, polite retries.

Remote providers (Pexels, Wikimedia Commons, plain URLs) all go through `Http` so they share
one connection pool and one retry policy:

- a descriptive User-Agent (Pexels answers 401/403 to default library agents; Wikimedia requires one);
- separate connect and read timeouts, so a dead host fails fast and a stalled body fails too;
- bounded retries on 5xx, 429, timeouts and dropped connections, with capped exponential backoff
  plus jitter (so parallel producers do not retry in lock step), and `Retry-After` honoured;
- a per-request `RateHook` for provider bookkeeping (Pexels' quota headers, Commons' `maxlag`);
  the waits a hook asks for (an hourly limit, a lagging database) do not use up the retries,
  up to `MAX_HINTED_WAITS` of them.

Sleeping goes through `sleep` and every wait is capped by `max_wait`, so tests inject a recorder
instead of waiting and a server asking for an absurd delay gives a clear error, not a hang.
Downloads stream into memory with a byte cap, API answers too (`MAX_RESPONSE_BYTES`), each on a
minimum-rate schedule (`transfer`); nothing is written to disk. `stop()` (`stop_all()` on Ctrl-C
or SIGTERM) wakes every wait and cuts every transfer in flight short.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import httpx

from streampose import __version__
from streampose.errors import SourceError
from streampose.sources.transfer import GRACE_S, MIN_RATE, Transfers, declared_length

USER_AGENT = f"stream-pose/{__version__} (3D pose research tool; https://github.com/stream-pose)"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_HINTED_WAITS = 16  # waits a provider's hook may ask for on one request before it gives up
LONG_WAIT_S = 10.0  # waits at least this long are announced as warnings; shorter ones only logged
MAX_RESPONSE_BYTES = 20_000_000  # an API answer (a page of search results) is a few hundred kB
#: Errors a retry cannot fix: the request or the answer is broken, not the connection.
_BROKEN = (httpx.TooManyRedirects, httpx.DecodingError, httpx.InvalidURL, httpx.UnsupportedProtocol)

log = logging.getLogger(__name__)


class TransientSourceError(SourceError):
    """Retries ran out on an error that may pass (5xx, 429, timeout): a looping caller may try later."""


class RateHook(Protocol):
    """Provider bookkeeping around each API request (not downloads)."""

    def before_request(self) -> float:
        """Seconds to wait before sending (0 when the quota allows a request now)."""
        ...

    def after_response(self, response: httpx.Response) -> tuple[float, str] | None:
        """Record what the response says; `(seconds, reason)` means "retry this request after that wait"."""
        ...


def setting(name: str, *, dotenv: str | Path = ".env") -> str | None:
    """A setting from the environment, else from a `KEY=value` line of `.env` in the working dir.

    Parsed by hand (no python-dotenv): comments, blank lines, `export ` and quotes are handled.
    The value is never logged.
    """
    value = os.environ.get(name)
    if value:
        return value.strip()
    try:
        lines = Path(dotenv).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, val = line.removeprefix("export ").partition("=")
        if key.strip() != name:
            continue
        val = val.strip()
        if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
            val = val[1:-1]
        elif " #" in val:
            val = val.split(" #", 1)[0].rstrip()
        return val or None
    return None


def retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta seconds or an HTTP date), else None."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def _status_text(response: httpx.Response) -> str:
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _broken(what: str, error: Exception) -> SourceError:
    """One line for a request or answer that no retry can fix."""
    reason = {
        httpx.TooManyRedirects: "too many redirects (a redirect loop?)",
        httpx.DecodingError: "the body does not decode as its Content-Encoding says",
        httpx.InvalidURL: f"not a valid URL ({error})",
    }.get(type(error), str(error))
    return SourceError(f"{what}: {reason}")


_clients: weakref.WeakSet[Http] = weakref.WeakSet()


def stop_all() -> None:
    """`stop()` every client of this process (Ctrl-C, SIGTERM: see `streampose.interrupts`)."""
    for client in list(_clients):
        client.stop()


class Http:
    """A shared, thread-safe HTTP client with retries (see the module docstring).

    `client` wraps an existing httpx.Client instead of making one (its headers are used as they are).
    """

    def __init__(
        self,
        *,
        user_agent: str = USER_AGENT,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_wait: float = 3700.0,
        min_rate: float = MIN_RATE,
        grace: float = GRACE_S,
        sleep: Callable[[float], object] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.transfers = Transfers(min_rate, grace)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_wait = max_wait
        # The default sleep wakes up on stop(), so a producer waiting out a rate limit can shut down.
        self.sleep = sleep or self.transfers.stopped.wait
        self._own = client is None
        self.client = client or httpx.Client(
            headers={"User-Agent": user_agent}, timeout=self.timeout, follow_redirects=True
        )
        _clients.add(self)

    def stop(self) -> None:
        """Cut every current and future wait and transfer short: their callers get a SourceError
        ("stopped")."""
        self.transfers.stop()

    def close(self) -> None:
        if self._own:
            self.client.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Http(retries={self.retries}, timeout={self.timeout.read}s)"

    # -- waiting -------------------------------------------------------------------------------

    def backoff_delay(self, attempt: int) -> float:
        """Capped exponential backoff with jitter: attempt 0 waits about `backoff`, then doubles."""
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap * random.uniform(0.5, 1.0)

    def wait(self, seconds: float, what: str, why: str, *, quiet: bool = False) -> None:
        """Sleep `seconds` (announced when long, unless `quiet`: a routine wait); refuse waits over
        `max_wait` with a clear error."""
        if seconds <= 0:
            return
        if seconds > self.max_wait:
            raise TransientSourceError(
                f"{what}: {why}; that means waiting {seconds / 60:.0f} min, more than the "
                f"{self.max_wait / 60:.0f} min this client waits"
            )
        if seconds >= LONG_WAIT_S and not quiet:
            warnings.warn(f"{what}: {why}; waiting {seconds:.0f} s", stacklevel=3)
        else:
            log.info("%s: %s; waiting %.1f s", what, why, seconds)
        self.sleep(seconds)
        if self.transfers.stopped.is_set():
            raise SourceError(f"{what}: stopped while waiting")

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float:
        hinted = retry_after(response)
        return hinted if hinted is not None else self.backoff_delay(attempt)

    # -- API requests --------------------------------------------------------------------------

    def _answer(self, method: str, url: str, what: str, **kwargs: object) -> httpx.Response:
        """One request's response, its body read under `MAX_RESPONSE_BYTES` on the minimum-rate schedule."""
        started, body = time.monotonic(), bytearray()
        with self.client.stream(method, url, timeout=self.timeout, **kwargs) as streamed:
            self.transfers.read(streamed, what, MAX_RESPONSE_BYTES, started, body)
        # The body as read (decoded), without the headers that described its encoding.
        drop = ("content-encoding", "content-length")
        kept = [(k, v) for k, v in streamed.headers.multi_items() if k not in drop]
        return httpx.Response(streamed.status_code, headers=kept, content=bytes(body), request=streamed.request)

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        hook: RateHook | None = None,
    ) -> httpx.Response:
        """Send a request with retries and return the final response (its body read).

        Statuses that are not retried (2xx, 3xx, most 4xx) come back for the caller to judge; retries
        that run out raise TransientSourceError naming `what`. `what` names the request in messages
        and must not contain secrets.
        """
        reason = "no attempt made"
        attempt = hinted_waits = 0
        while True:
            if hook is not None:
                self.wait(hook.before_request(), what, "rate limit reached, waiting for the quota to reset")
            try:
                response = self._answer(method, url, what, params=params, headers=headers)
            except httpx.TimeoutException as e:
                reason, delay = f"timed out ({type(e).__name__})", self.backoff_delay(attempt)
            except _BROKEN as e:
                raise _broken(what, e) from None
            except httpx.TransportError as e:
                self.transfers.raise_if_stopped(what)
                reason, delay = f"connection failed ({type(e).__name__}: {e})", self.backoff_delay(attempt)
            else:
                hinted = hook.after_response(response) if hook is not None else None
                if hinted is not None and hinted_waits < MAX_HINTED_WAITS:
                    # The provider knows how long (an hourly quota, a lagging database): its waits
                    # do not use up the retries meant for failures.
                    delay, reason = hinted
                    hinted_waits += 1
                    self.wait(delay, what, f"{reason}, wait {hinted_waits} of at most {MAX_HINTED_WAITS}")
                    continue
                if hinted is not None:
                    reason = f"{hinted[1]}, still after {hinted_waits} waits"
                    break
                if response.status_code not in RETRY_STATUSES:
                    return response
                reason, delay = _status_text(response), self._retry_delay(response, attempt)
            if attempt >= self.retries:
                break
            attempt += 1
            self.wait(delay, what, f"{reason}, retry {attempt} of {self.retries}")
        raise TransientSourceError(f"{what}: {reason} (gave up after {attempt + hinted_waits + 1} tries)")

    # -- downloads -----------------------------------------------------------------------------

    def download(
        self,
        url: str,
        *,
        what: str,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        check: Callable[[httpx.Response], None] | None = None,
    ) -> bytes:
        """Stream `url` into memory, refusing more than `max_bytes`.

        `check(response)` may raise SourceError to refuse a response from its headers (a wrong
        content type). Errors that a retry cannot fix (4xx, too big, refused by `check`) raise
        SourceError at once; timeouts, dropped connections, truncated bodies and 5xx are retried.
        """
        request_headers = {"Accept-Encoding": "identity", **(headers or {})}
        reason = "no attempt made"
        for attempt in range(self.retries + 1):
            self.transfers.raise_if_stopped(what)
            body, declared = bytearray(), 0
            delay = self.backoff_delay(attempt)
            started = time.monotonic()
            try:
                with self.client.stream("GET", url, headers=request_headers, timeout=self.timeout) as response:
                    if response.status_code in RETRY_STATUSES:
                        reason, delay = _status_text(response), self._retry_delay(response, attempt)
                    elif response.status_code >= 400:
                        raise SourceError(f"{what}: {_status_text(response)}")
                    else:
                        if check is not None:
                            check(response)
                        declared = declared_length(response, what, max_bytes)
                        self.transfers.read(response, what, max_bytes, started, body)
                        if declared and len(body) < declared:
                            reason = f"body truncated ({len(body)} of {declared} bytes)"
                        else:
                            return bytes(body)
            except httpx.TimeoutException as e:
                reason = f"timed out ({type(e).__name__}) after {len(body)} bytes"
            except _BROKEN as e:
                raise _broken(what, e) from None
            except httpx.RemoteProtocolError as e:
                self.transfers.raise_if_stopped(what)
                if declared:
                    reason = f"body truncated ({len(body)} of {declared} bytes): {e}"
                else:
                    reason = f"connection broken after {len(body)} bytes ({e})"
            except httpx.TransportError as e:
                self.transfers.raise_if_stopped(what)
                reason = f"connection failed ({type(e).__name__}: {e})"
            if attempt < self.retries:
                self.wait(delay, what, f"{reason}, retry {attempt + 1} of {self.retries}")
        raise TransientSourceError(f"{what}: {reason} (gave up after {self.retries + 1} tries)")


_default: Http | None = None
_default_lock = threading.Lock()


def default_http() -> Http:
    """The process-wide client, made on first use (httpx clients are thread-safe)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Http()
        return _default
