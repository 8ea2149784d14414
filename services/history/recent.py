"""History that already holds what the writer has not stored yet (read-your-writes).

Cassandra gets a message once the history writer has read it from its partition
log and written it: milliseconds to a few hundred (``PARLEY_HISTORY_LINGER_MS``),
or longer while Cassandra is slow or down. A client that sends and then opens the
conversation's history must still see its message, so pages are completed from
the conversation's recent messages in Redis (``Keys.messages``: the last
``PARLEY_MESSAGES_MAXLEN`` of them, entry id ``<seq>-0``, appended by the same
script that acked the send, with the same bytes the writer stores). Only seqs
missing from Cassandra are looked up there, so a caught-up writer costs one GET.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from history.reader import MessageSource
from parley.keys import F_MESSAGE, Keys

_F_MESSAGE = F_MESSAGE.encode()
# A range wider than this is not completed from Redis (it never is in practice:
# pages are at most 1,000 seqs), so a bad request cannot make a huge seq scan.
_MAX_FILL = 10_000


class WithRecent:
    """A :class:`history.reader.MessageSource`: the stored rows, completed from Redis."""

    def __init__(self, stored: MessageSource, redis: aioredis.Redis, keys: Keys) -> None:
        self._stored = stored
        self._redis = redis
        self._keys = keys

    async def head(self, conversation_id: str) -> int | None:
        stored, appended = await asyncio.gather(
            self._stored.head(conversation_id), self._redis.get(self._keys.seq(conversation_id))
        )
        top = max(stored or 0, int(appended or 0))
        return top or None

    async def read_range(self, conversation_id: str, first: int, last: int) -> list[tuple[int, bytes]]:
        rows = await self._stored.read_range(conversation_id, first, last)
        if last < first or last - first >= _MAX_FILL or len(rows) == last - first + 1:
            return rows
        have = {seq for seq, _ in rows}
        low = next(seq for seq in range(first, last + 1) if seq not in have)
        high = next(seq for seq in range(last, first - 1, -1) if seq not in have)
        key = self._keys.messages(conversation_id)
        recent = await self._redis.xrange(key, min=f"{low}-0", max=f"{high}-0")
        for entry_id, fields in recent:
            seq = int(entry_id.split(b"-", 1)[0])
            payload = fields.get(_F_MESSAGE)
            if seq not in have and payload is not None:
                rows.append((seq, payload))
                have.add(seq)
        rows.sort(key=lambda row: row[0])
        return rows
