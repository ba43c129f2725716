"""A token bucket, pure (the caller passes the clock): how fast a WebSocket client may send.

The gateway holds each client to one (`gateway.session`), and the Python client paces its
own messages with one below that limit (`jobstream.client.stream`). Every client message
costs the gateway work (parsing, maybe a Redis snapshot, a reply
frame), so a client may send `burst` messages at once and then `rate` per second. The
gateway closes a client that goes faster (1008, see `gateway.session`) rather than
throttling it by not reading: a client that floods is broken or hostile, and closing
frees its memory at once instead of holding its unread messages in socket buffers.

`take` is O(1) and allocates nothing.
"""

from __future__ import annotations

__all__ = ["Throttle"]


class Throttle:
    """A token bucket holding at most `burst` tokens, refilled at `rate` tokens a second."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a throttle needs rate > 0 and burst >= 1, got {rate} and {burst}")
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one (True); else False. `now` is a monotonic clock, in s."""
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait_s(self) -> float:
        """How long after the last `take` a token will be there (0 if one is)."""
        return max(0.0, (1 - self._tokens) / self.rate)
