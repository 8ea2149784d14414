"""Every Redis key and stream Parley uses, named in one place.

Conversation-scoped keys carry the hash tag of the conversation's log
partition, ``{p<N>}``, so the seq counter, dedupe keys, the conversation's
message stream and the partition log it is appended to all live in one Redis
Cluster slot and one Lua script can update them atomically.

Layout (``<prefix>`` is ``PARLEY_REDIS_PREFIX``, default ``parley``):

- ``<prefix>:{pN}:log``                 partition log (stream): every appended message of the
                                        partition's conversations, read by consumer groups
                                        (router fan-out, history writer)
- ``<prefix>:{pN}:seq:<cid>``           last assigned seq of a conversation (string int)
- ``<prefix>:{pN}:msgs:<cid>``          recent messages of a conversation (stream, entry id ``<seq>-0``),
                                        trimmed to a bounded length; older ones are in Cassandra
- ``<prefix>:{pN}:dd:<cid>:<len(sender)>:<sender>:<client_message_id>``  seq of an idempotent send
                                        (TTL'd 48 h). The sender id is length-prefixed, so
                                        no two (sender, client_message_id) pairs share a key
                                        even when ids contain ':'.
- ``<prefix>:{pN}:dedupe:<cid>:<sender>:<client_message_id>``  the same, before the length
                                        prefix (ambiguous: "p:q"+"m1" = "p"+"q:m1"). Only read,
                                        never written, so retries of sends made before the
                                        upgrade still dedupe; remove 48 h after deploying.
- ``<prefix>:{pN}:meta:<cid>``          conversation metadata (hash)
- ``<prefix>:{pN}:members:<cid>``       members (set)
- ``<prefix>:{pN}:cursors:<cid>``       per-member positions (hash: ``d:<uid>`` delivered, ``r:<uid>`` read)
- ``<prefix>:user:<uid>:convs``         a user's conversations (zset, score = join time ms)
- ``<prefix>:routes:<uid>``             gateways with sessions of a user (hash gateway_id -> registered ms);
                                        not renewed: valid while its gateway is alive
- ``<prefix>:gateways``                 live gateways (zset gateway_id -> liveness lease expiry ms), the one
                                        thing a gateway renews on a timer, whatever its number of users
- ``<prefix>:gw:<gateway_id>:users``    users with a route to this gateway (set), so the routes of a
                                        gateway that died are removed without scanning
- ``<prefix>:gw:<gateway_id>:inbox``    deliveries for one gateway (stream, read by that gateway only)
- ``<prefix>:lease:{pN}``               which router instance fans out partition N (string, PX lease)
- ``<prefix>:history:keyspace:<ks>``    id of the Cassandra keyspace that holds this deployment's history
                                        (string; ``*`` = an operator accepted a new, empty keyspace).
                                        Evidence that history was written: see ``history.guard``
- ``<prefix>:{presence}:...``           presence (below)

Presence keys all carry the one hash tag ``{presence}``, so each Lua script
that moves a user between online and offline (session index, lease zset, the
user's hashes and the change stream together) touches a single Redis Cluster
slot and stays atomic. The presence keyspace then lives on one shard: at
100,000 sessions that is ~50 MB and ~10,000 renewals/s in about ten script
calls, far below one shard's capacity. Scaling beyond one shard means
splitting the tag by user (``{presence:<n>}``) with one lease zset,
lingering zset and change stream per shard.

- ``<prefix>:{presence}:sessions:<uid>``  a user's live sessions (hash session_id -> device_id)
- ``<prefix>:{presence}:state:<uid>``     a user's status (hash: ``st`` status number, ``ls`` last seen ms,
                                          ``ch`` changed ms, ``lf`` when the last session was lost)
- ``<prefix>:{presence}:index``           every live session (hash session_id ->
                                          ``user\\x1fdevice\\x1fgateway\\x1flease_ms``)
- ``<prefix>:{presence}:leases``          lease expiries (zset): ``gw\\x1f<gateway_id>`` -> expiry ms, one per
                                          gateway, keeping all of its sessions live (a gateway renews one
                                          entry per interval, whatever its number of sessions); plain
                                          session ids are sessions leased before gateway leases
- ``<prefix>:{presence}:gwsessions:<gid>``  a gateway's live sessions (set), reaped with its lease
- ``<prefix>:{presence}:lingering``       users whose last connection broke, by the time offline is
                                          due (zset user_id -> ms)
- ``<prefix>:{presence}:changes``         stream of status changes (field ``p``: serialized
                                          parley.v1.Presence), read by every gateway
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Consumer groups on the partition logs.
FANOUT_GROUP = "fanout"
HISTORY_GROUP = "history"
LOG_GROUPS = (FANOUT_GROUP, HISTORY_GROUP)

# Field names inside log, inbox and message stream entries (short: they are stored per entry).
F_CONVERSATION = "c"
F_SEQ = "s"
F_MESSAGE = "m"  # serialized parley.v1.Message
F_EXCLUDE_SESSION = "x"  # session that must not get this delivery (the sender's sending session)
F_FRAME = "f"  # serialized parley.v1.ConnectResponse (inbox)
F_USERS = "u"  # comma-separated target user ids (inbox)
F_TRACEPARENT = "tp"
F_PRESENCE = "p"  # serialized parley.v1.Presence (presence change stream)
# Log entries that are not messages carry a kind; consumers that only want
# messages (fan-out) skip them, the history writer stores them.
F_KIND = "k"
KIND_CONVERSATION = "conversation"  # m = serialized parley.v1.Conversation (at creation)
KIND_JOIN = "join"  # u = comma-separated users added
KIND_LEAVE = "leave"  # u = comma-separated users removed
KIND_READ = "read"  # u = user, s = read position

# Fields of a conversation's meta hash.
META_KIND = "kind"  # "direct" or "group"
META_NAME = "name"
META_CREATED_BY = "created_by"
META_CREATED_AT = "created_at"  # unix ms
META_FIELDS = (META_KIND, META_NAME, META_CREATED_BY, META_CREATED_AT)

# A member's positions in the cursors hash are "<kind>:<user id>".
CURSOR_DELIVERED = "d"
CURSOR_READ = "r"


def cursor_field(kind: str, user_id: str) -> str:
    return f"{kind}:{user_id}"


# Presence names, passed to the presence scripts (which build per-user keys from them).
# Suffixes after ``Keys.presence_base``:
PRESENCE_SESSIONS = "sessions:"  # + user id: a user's live sessions
PRESENCE_STATE = "state:"  # + user id: a user's status
PRESENCE_GATEWAY_SESSIONS = "gwsessions:"  # + gateway id: a gateway's live sessions
# Fields of a user's state hash.
PF_STATUS = "st"
PF_LAST_SEEN = "ls"
PF_CHANGED = "ch"
PF_LOST_AT = "lf"  # when the user's last connection was lost (lingering)
# A gateway's member in the lease zset: this, the unit separator, the gateway id.
PRESENCE_GATEWAY_MEMBER = "gw"
# Fields of the stats hash: users not offline, and transitions to status <n> ("to_<n>").
STAT_ONLINE = "online"
STAT_TRANSITIONS_TO = "to_"
PRESENCE_SCRIPT_NAMES = (
    PRESENCE_STATE,
    PRESENCE_SESSIONS,
    PRESENCE_GATEWAY_SESSIONS,
    PF_STATUS,
    PF_LAST_SEEN,
    PF_CHANGED,
    PF_LOST_AT,
    F_PRESENCE,
    PRESENCE_GATEWAY_MEMBER,
    STAT_ONLINE,
    STAT_TRANSITIONS_TO,
)


def partition_of(conversation_id: str, partitions: int) -> int:
    """Stable partition of a conversation (crc32, so every process agrees)."""
    return zlib.crc32(conversation_id.encode()) % partitions


@dataclass(frozen=True)
class Keys:
    prefix: str = "parley"
    # Number of log partitions. Fixed for the life of a deployment: changing it
    # moves conversations between partitions (and their seq counters).
    partitions: int = 16

    def partition(self, conversation_id: str) -> int:
        return partition_of(conversation_id, self.partitions)

    def _tag(self, conversation_id: str) -> str:
        return f"{self.prefix}:{{p{self.partition(conversation_id)}}}"

    # Partition-scoped
    def log(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:log"

    def log_of(self, conversation_id: str) -> str:
        return self.log(self.partition(conversation_id))

    def logs(self) -> list[str]:
        return [self.log(p) for p in range(self.partitions)]

    def partition_lease(self, partition: int) -> str:
        return f"{self.prefix}:lease:{{p{partition}}}"

    # Conversation-scoped (same slot as the conversation's log)
    def seq(self, conversation_id: str) -> str:
        return f"{self._tag(conversation_id)}:seq:{conversation_id}"

    def messages(self, conversation_id: str) -> str:
        return f"{self._tag(conversation_id)}:msgs:{conversation_id}"

    def dedupe(self, conversation_id: str, sender_id: str, client_message_id: str) -> str:
        # Length-prefixed sender: the key determines (sender, client_message_id) uniquely.
        tag = self._tag(conversation_id)
        return f"{tag}:dd:{conversation_id}:{len(sender_id)}:{sender_id}:{client_message_id}"

    def dedupe_legacy(self, conversation_id: str, sender_id: str, client_message_id: str) -> str:
        """The pre-length-prefix dedupe key: read (never written) for 48 h after the upgrade."""
        return f"{self._tag(conversation_id)}:dedupe:{conversation_id}:{sender_id}:{client_message_id}"

    def meta(self, conversation_id: str) -> str:
        return f"{self._tag(conversation_id)}:meta:{conversation_id}"

    def members(self, conversation_id: str) -> str:
        return f"{self._tag(conversation_id)}:members:{conversation_id}"

    def cursors(self, conversation_id: str) -> str:
        return f"{self._tag(conversation_id)}:cursors:{conversation_id}"

    # User-scoped
    def user_conversations(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:convs"

    def routes(self, user_id: str) -> str:
        return f"{self.prefix}:routes:{user_id}"

    # History
    def history_keyspace(self, keyspace: str) -> str:
        return f"{self.prefix}:history:keyspace:{keyspace}"

    # Gateway-scoped
    def gateways(self) -> str:
        return f"{self.prefix}:gateways"

    def gateway_users(self, gateway_id: str) -> str:
        return f"{self.prefix}:gw:{gateway_id}:users"

    def inbox(self, gateway_id: str) -> str:
        return f"{self.prefix}:gw:{gateway_id}:inbox"

    # Presence (owned by the presence service; see the module docstring)
    @property
    def presence_base(self) -> str:
        """Common start of every presence key (the Lua scripts append per-user suffixes to it)."""
        return f"{self.prefix}:{{presence}}:"

    def presence_sessions(self, user_id: str) -> str:
        return f"{self.presence_base}{PRESENCE_SESSIONS}{user_id}"

    def presence_state(self, user_id: str) -> str:
        return f"{self.presence_base}{PRESENCE_STATE}{user_id}"

    def presence_gateway_sessions(self, gateway_id: str) -> str:
        return f"{self.presence_base}{PRESENCE_GATEWAY_SESSIONS}{gateway_id}"

    def presence_index(self) -> str:
        return f"{self.presence_base}index"

    def presence_leases(self) -> str:
        return f"{self.presence_base}leases"

    def presence_lingering(self) -> str:
        return f"{self.presence_base}lingering"

    def presence_stats(self) -> str:
        """Counters for metrics: online users, transitions by status (the presence scripts keep them)."""
        return f"{self.presence_base}stats"

    def presence_changes(self) -> str:
        return f"{self.presence_base}changes"
