"""GET JSON from an exchange's REST API without ever crashing the collector.

Rate limits (429, and Binance's 418 ban) and server errors (5xx) wait for the ``Retry-After`` the
exchange asks for, or a jittered backoff, and try again; network errors back off too. After a
bounded number of attempts, or on an answer no retry can change (another 4xx), ``RestError``
says why, and the caller records what it could not fetch.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Callable

import httpx

from io_connectors.backoff import Backoff

log = logging.getLogger("cryptobeam.collect")
RETRYABLE_STATUS = {418, 429}


class RestError(RuntimeError):
    """A REST request that failed for good."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


@dataclass
class RestClient:
    http: httpx.AsyncClient
    backoff: Backoff
    attempts: int = 5
    on_retry: Callable[[], None] = lambda: None

    async def get_json(self, url: str, params: dict):
        problem = "no attempt made"
        for attempt in range(self.attempts):
            wait = self.backoff.delay(attempt)
            try:
                response = await self.http.get(url, params=params)
            except httpx.HTTPError as error:  # connection refused, reset, timeouts ...
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        problem = "the answer is not JSON"
                elif response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
                    problem = f"HTTP {response.status_code} {response.text[:200]!r}"
                    asked = retry_after_seconds(response.headers.get("Retry-After"))
                    wait = wait if asked is None else max(asked, wait)
                else:
                    raise RestError(f"GET {url} {params}: HTTP {response.status_code} {response.text[:200]!r}")
            if attempt + 1 < self.attempts:
                self.on_retry()
                log.warning(
                    "GET %s failed (%s); retry %d/%d in %.1f s", url, problem, attempt + 1, self.attempts - 1, wait
                )
                await asyncio.sleep(wait)
        raise RestError(f"GET {url} {params}: gave up after {self.attempts} attempts: {problem}")
