"""The mosquitto ACL file format, parsed and evaluated with mosquitto 2.0's own semantics.

`MosquittoAcl(text).allowed(username, access, topic)` answers as the broker would. It is used to
prove the mosquitto and AWS renderings equal (warden.policy.proof) and by `warden audit`. Note
that mosquitto drops a denied publish silently and grants every subscription (filtering
delivery): tests must observe isolation from a privileged client. This module must not render
ACLs (mosquitto.py does) nor read the policy: it judges whatever ACL text it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

from .model import PolicyError
from .topics import topic_matches, valid_filter


READ, WRITE, SUBSCRIBE = 1, 2, 4
_ACCESS_BITS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}


class AclSyntaxError(PolicyError):
    hint = "the ACL is generated: edit the policy, not the ACL, and render it with `warden policy render --format mosquitto`"


@dataclass
class AclEntry:
    access: int          # READ/WRITE bits; 0 = deny
    topic: str
    line: int


class MosquittoAcl:
    """A mosquitto 2.0 `acl_file`, parsed and evaluated with the broker's own rules
    (src/security_default.c in mosquitto 2.0.11):

    - `user NAME` starts a block; `topic [read|write|readwrite|deny] FILTER` lines before any
      `user` line belong to anonymous clients; `pattern` lines apply to every client, with %u
      (username) and %c (client id) substituted.
    - The client's own entries are checked first, then the patterns; within each list the
      `deny` entries come first. The first entry whose filter matches decides: deny -> denied,
      the requested access among its bits -> allowed; otherwise the search goes on. No match
      -> denied.
    - A username or client id containing + or # gets nothing from patterns.
    - Subscriptions are not checked by the default ACL (always granted); delivery is (READ).
    """

    def __init__(self, text: str):
        self.users: dict = {}        # username (None = anonymous) -> [AclEntry]
        self.patterns: list = []
        user = None
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            word = parts[0]
            rest = parts[1].strip() if len(parts) > 1 else ""
            if word in ("topic", "pattern"):
                if not rest:
                    raise AclSyntaxError(f"acl line {n}: empty topic")
                bits = rest.split(None, 1)
                if len(bits) == 2:
                    if bits[0] not in _ACCESS_BITS:
                        raise AclSyntaxError(f"acl line {n}: invalid access type {bits[0]!r}")
                    access, topic = _ACCESS_BITS[bits[0]], bits[1].strip()
                else:
                    access, topic = READ | WRITE, bits[0]
                if not valid_filter(topic):
                    raise AclSyntaxError(f"acl line {n}: invalid ACL topic {topic!r}")
                entry = AclEntry(access, topic, n)
                target = self.patterns if word == "pattern" else self.users.setdefault(user, [])
                if access == 0:
                    target.insert(0, entry)     # mosquitto puts "deny" entries at the front
                else:
                    target.append(entry)
            elif word == "user":
                if not rest:
                    raise AclSyntaxError(f"acl line {n}: missing username")
                user = rest
            else:
                raise AclSyntaxError(f"acl line {n}: invalid line {line!r}")

    @staticmethod
    def _first_match(entries, topic, access, subst=None):
        for e in entries:
            flt = subst(e.topic) if subst else e.topic
            if topic.startswith("$") and not flt.startswith("$"):
                continue
            if topic_matches(flt, topic):
                if e.access == 0:
                    return False
                if access & e.access:
                    return True
        return None

    def allowed(self, username: str | None, access: str, topic: str, client_id: str | None = None) -> bool:
        """Would mosquitto allow `access` ('read', 'write' or 'subscribe') on `topic` for this client?

        `client_id` defaults to the username (use_username_as_clientid)."""
        if access == "subscribe":
            return True   # FIXME in mosquitto 2.0: the default ACL does not check subscriptions
        bit = {"read": READ, "write": WRITE}[access]
        client_id = username if client_id is None else client_id
        own = self.users.get(username, [])
        verdict = self._first_match(own, topic, bit)
        if verdict is not None:
            return verdict
        if not self.patterns:
            return False
        if (username and any(c in username for c in "+#")) or (client_id and any(c in client_id for c in "+#")):
            return False
        if not client_id:
            return False

        def subst(t):
            out, i = [], 0
            while i < len(t):
                if t[i] == "%" and i + 1 < len(t) and t[i + 1] == "c":
                    out.append(client_id)
                    i += 2
                elif t[i] == "%" and i + 1 < len(t) and t[i + 1] == "u" and username:
                    out.append(username)
                    i += 2
                else:
                    out.append(t[i])
                    i += 1
            return "".join(out)

        return bool(self._first_match(self.patterns, topic, bit, subst))

    def entries_for(self, username: str) -> tuple:
        """(the user's own entries, the patterns with %u/%c = username), each deny-first."""
        own = list(self.users.get(username, []))
        pats = [AclEntry(e.access, e.topic.replace("%u", username).replace("%c", username), e.line)
                for e in self.patterns]
        return own, pats
