"""Fetching a playback's ``audio_url``: bounded download, content check, decode off the loop,
cache.

The media plane (``engine.media_plane.plane``) asks for a URL overlay's samples with ``cached`` and,
on a miss, ``request``; the fetcher downloads the URL once however many legs wait for it, then
calls each waiter back on the event loop with the samples or an ``OverlayError`` whose status
becomes the ``call.playback.ended`` status. Bounds, each a setting (``AudioFetchLimits``):

- the download: at most ``max_bytes`` (a ``Content-Length`` above it is refused before the body
  is read; a body that grows past it is cut off), within ``timeout_s`` in total (a server that
  drips bytes cannot hold a fetch open), at most ``MAX_REDIRECTS`` redirects;
- the content: WAV or MP3 judged by the bytes (``engine.media_plane.audio_sources.sniff_audio``), at
  most ``max_seconds`` long, decoded in a worker thread so the media tick never waits for it;
- the addresses: the session's connector applies the URL policy (``engine.url_policy``) to every
  connection, redirects included, so a name resolving to a private address is refused;
- tenants: the cache is keyed by (organization, URL), so one organization never learns what
  another played nor gets audio another fetched, and each organization has at most
  ``MAX_FETCHES_PER_ORG`` downloads running, so a tenant with a slow server only queues its own.

The cache holds decoded samples (read-only arrays shared by every leg that plays them) for
``cache_ttl_s`` after the fetch, evicting the least recently used beyond ``cache_max_bytes``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import numpy as np
from numpy.typing import NDArray

from engine.logs import get_logger
from engine.machine.model import OverlaySource
from engine.media_plane.audio_sources import OverlayError, decode_audio, sniff_audio
from engine.url_policy import ForbiddenAddress, http_connector

log = get_logger("callbridge.audio")
MAX_REDIRECTS = 3
MAX_FETCHES_PER_ORG = 4
CHUNK = 64 * 1024
# What the fetch asks for; the bytes decide what it gets (see engine.media_plane.audio_sources).
ACCEPT = "audio/wav, audio/x-wav, audio/wave, audio/mpeg, audio/mp3;q=0.9, */*;q=0.1"

Arrived = Callable[[OverlaySource, NDArray[np.int16] | OverlayError], None]
# (organization, URL, the audio_type it must be)
CacheKey = tuple[int | None, str, str | None]


@dataclass(frozen=True, slots=True)
class AudioFetchLimits:
    max_bytes: int = 10 * 1024 * 1024
    timeout_s: float = 10.0
    max_seconds: float = 1800.0
    cache_ttl_s: float = 300.0
    cache_max_bytes: int = 256 * 1024 * 1024


class AudioCache:
    """Decoded audio by (organization, URL): expires ``ttl_s`` after it was stored; the least
    recently used goes first when the total passes ``max_bytes``."""

    def __init__(self, ttl_s: float, max_bytes: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[CacheKey, tuple[float, NDArray[np.int16]]] = OrderedDict()
        self._bytes = 0

    def get(self, key: CacheKey) -> NDArray[np.int16] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        stored, samples = entry
        if self._clock() - stored > self._ttl:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return samples

    def put(self, key: CacheKey, samples: NDArray[np.int16]) -> None:
        if key in self._entries:
            self._drop(key)
        if samples.nbytes > self._max_bytes:
            return  # playable now, but would push everything else out
        samples.setflags(write=False)
        self._entries[key] = (self._clock(), samples)
        self._bytes += samples.nbytes
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: CacheKey) -> None:
        _, samples = self._entries.pop(key)
        self._bytes -= samples.nbytes

    @property
    def size_bytes(self) -> int:
        return self._bytes


class AudioFetcher:
    """The media plane's ``RemoteAudio``: see the module docstring."""

    def __init__(
        self,
        sample_rate: int,
        limits: AudioFetchLimits,
        *,
        allow_private: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = sample_rate
        self._limits = limits
        self._allow_private = allow_private
        self.cache = AudioCache(limits.cache_ttl_s, limits.cache_max_bytes, clock)
        self._session: aiohttp.ClientSession | None = None
        self._waiting: dict[CacheKey, tuple[OverlaySource, list[Arrived]]] = {}
        self._per_org: dict[int | None, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.fetched = 0
        self.failed = 0

    def cached(self, source: OverlaySource) -> NDArray[np.int16] | None:
        """The cached samples; None for a source asking not to be cached (``cache_audio``
        false: fetched again each time it plays, and not kept)."""
        return self.cache.get(_key(source)) if source.cache else None

    def request(self, source: OverlaySource, arrived: Arrived) -> None:
        """Fetch ``source`` (once, however many ask) and call ``arrived`` with the result."""
        key = _key(source)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting[1].append(arrived)
            return
        self._waiting[key] = (source, [arrived])
        task = asyncio.get_running_loop().create_task(self._fetch(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self, key: CacheKey) -> None:
        org_id, url, audio_type = key
        result: NDArray[np.int16] | OverlayError
        try:
            async with self._per_org.setdefault(org_id, asyncio.Semaphore(MAX_FETCHES_PER_ORG)):
                result = await self._load(url, audio_type)
        except OverlayError as exc:
            result = exc
            self.failed += 1
            log.info("audio_url refused", org_id=org_id, url=url, reason=str(exc))
        except Exception:
            # Whatever went wrong, the legs waiting for this URL must hear that it failed.
            log.exception("audio_url fetch failed", org_id=org_id, url=url)
            result = OverlayError(f"{url} could not be played", status="unknown")
            self.failed += 1
        else:
            self.fetched += 1
        source, waiters = self._waiting.pop(key)
        if source.cache and not isinstance(result, OverlayError):
            self.cache.put(key, result)
        for arrived in waiters:
            arrived(source, result)

    async def _load(self, url: str, audio_type: str | None) -> NDArray[np.int16]:
        data, content_type = await self._download(url)
        kind = sniff_audio(data)
        if kind is None:
            raise OverlayError(f"{url} is not a WAV or MP3 file (Content-Type {content_type})")
        if audio_type is not None and kind != audio_type:
            raise OverlayError(f"{url} is {kind.upper()}, not {audio_type.upper()} (audio_type)")
        decode = functools.partial(
            decode_audio, data, self._rate, max_seconds=self._limits.max_seconds
        )
        return await asyncio.get_running_loop().run_in_executor(None, decode)

    async def _download(self, url: str) -> tuple[bytes, str]:
        limit = self._limits.max_bytes
        try:
            async with self._client().get(
                url,
                timeout=aiohttp.ClientTimeout(total=self._limits.timeout_s),
                max_redirects=MAX_REDIRECTS,
                headers={"Accept": ACCEPT},
            ) as response:
                if response.status != 200:
                    raise OverlayError(
                        f"{url} answered HTTP {response.status}", status="file_not_found"
                    )
                if response.content_length is not None and response.content_length > limit:
                    raise OverlayError(f"{url} is larger than {limit} bytes")
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > limit:
                        raise OverlayError(f"{url} is larger than {limit} bytes")
                return bytes(body), response.content_type
        except aiohttp.ClientConnectorError as exc:
            reason = str(exc.os_error) if isinstance(exc.os_error, ForbiddenAddress) else str(exc)
            raise OverlayError(f"{url} cannot be reached: {reason}", "file_not_found") from None
        except aiohttp.TooManyRedirects:
            raise OverlayError(f"{url} redirects more than {MAX_REDIRECTS} times") from None
        except TimeoutError:
            raise OverlayError(
                f"{url} did not arrive within {self._limits.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            raise OverlayError(f"{url} could not be fetched: {type(exc).__name__}") from None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The URLs are the tenants': the connector applies the URL policy at connect time.
            self._session = aiohttp.ClientSession(
                connector=http_connector(allow_private=self._allow_private)
            )
        return self._session


def _key(source: OverlaySource) -> CacheKey:
    return (source.org_id, source.name, source.audio_type)
