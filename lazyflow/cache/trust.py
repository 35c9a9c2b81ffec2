"""Signed remote entries: a reader decodes only what a key it trusts signed.

Design note
-----------
Threat. Whoever can write to a shared bucket could otherwise make every
reader unpickle, that is run, bytes of their choosing. With trust
configured (``lf.Cache(sign_with=..., trusted_keys=...)``), writers sign
every entry object they write and readers take an entry only when a key
they trust signed it. Anything else (unsigned, signed by another key,
signed wrong, a layout-1 entry) is a miss decided from the entry object
alone, before its content is fetched and before anything is decoded
(``remote_reads.py``), with one :class:`CacheWarning` per remote and
process. Such an entry is never written over either: value entries are
written create-only, and a record a reader does not trust is left as it is
rather than merged into (a merge would sign a stranger's fields). So one
remote prefix is one trust domain: an entry written there unsigned, or
signed by a key the readers do not trust, keeps those readers missing that
key until it is pruned.

What is signed (:func:`message`)::

    b"lazyflow-entry\\0" layout b"\\0" key b"\\0" meta b"\\0" value

* ``meta`` is the whole metadata in canonical form: the compact JSON that
  ``serialize.dump_meta`` writes of it *as parsed* (a reader recomputes it
  from what it parsed, a writer from the parse of what it stores). Whole,
  not only the checksum, size, serializer and encoding: the digest that
  dependents are keyed by, or the entry a trace record names, altered,
  would serve a signed value to the wrong request.
* ``value`` is ``b"data:"`` and the SHA-256 of the inline bytes, ``b"cas:"``
  checksum ``b":"`` SHA-256 of a content object (stored in the entry as
  ``"sha256"``, compared with the downloaded bytes before they are
  decoded), or ``b"record"``. SHA-256 rather than the entry's xxh3
  checksum alone: xxh3 is fast but not collision resistant, so bytes forged
  to match it must not pass for signed ones.

Keys. :class:`HmacKey` signs with HMAC-SHA256 and a secret the team
shares (the standard library's ``hmac``): whoever verifies could also sign.
:class:`Ed25519Key` (``ed25519-secret:...`` signs, ``ed25519:...`` public
keys verify) lets readers hold public keys only, as Nix caches do; it needs
the ``cryptography`` package, which lazyflow does not depend on (the
standard library has no public-key signatures), and costs more to verify
(``docs/caching.md`` gives both costs). A key's id is a hash: of the
secret for HMAC, of the public key for Ed25519.

Secrets. A key keeps its secret to itself: its repr and id, the warnings
and errors never show it, and nothing is written with it (metadata,
history, logs). It travels only to the tier's own Dask workers, inside the
pickled tier, as the remote's credentials do.

Read-only. A store whose :class:`Trust` is ``read_only`` refuses every
write and delete before a request is made (:class:`ReadOnlyRemoteError`).
A process that verifies but has no key to sign with is read-only too: what
it wrote, no trusted reader could use, and since writes are create-only,
it would keep a signed entry from ever being written under that key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from lazyflow.cache.base import CorruptEntryError, TierOfflineError
from lazyflow.cache.remote_entries import LAYOUT, EntryObject, Signature, UnknownLayoutError
from lazyflow.cache.serialize import Encoded, UnknownEncodingError, dump_meta
from lazyflow.errors import CacheWarning, ConfigError

__all__ = ["ED25519", "HMAC", "MIN_SECRET", "TRUST_OPTION", "Ed25519Key", "HmacKey", "Key",
           "ReadOnlyRemoteError", "Trust", "UntrustedEntryError", "content_sha256",
           "generate_ed25519_key", "message", "warn_untrusted"]

TRUST_OPTION = "lazyflow_trust"
"""The ``remote_options`` key under which ``lf.Cache`` hands the tier its :class:`Trust`
(lazyflow's own, never fsspec's; workers inherit it with the options)."""

HMAC = "hmac-sha256"
ED25519 = "ed25519"
MIN_SECRET = 16
"""Bytes a shared secret must have at least (a short one is guessed offline from any
signature)."""

_ED_SECRET = b"ed25519-secret:"
_ED_PUBLIC = b"ed25519:"
_NEW_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class ReadOnlyRemoteError(TierOfflineError, PermissionError):
    """A write or delete asked of a read-only remote (``read_only=True``, or trusted keys
    without a key to sign with). The hierarchy leaves such a tier out of its writes without
    a word, as it does an offline one; management (``clear``, ``prune``) raises it."""


class UntrustedEntryError(UnknownLayoutError):
    """With trust configured, an entry object no trusted key signed: a miss (a ``KeyError``),
    never decoded, never replaced or deleted by the request path."""

    def __init__(self, key: str) -> None:
        UnknownEncodingError.__init__(
            self, f"remote cache entry {key[:12]}… is not signed by a trusted key (unsigned, "
            "or signed by another key): it is ignored")
        self.version = None


class Key(Protocol):
    """What signs or verifies: an algorithm and an id that never reveal the secret."""

    alg: str
    id: str

    def sign(self, message: bytes) -> bytes:
        """The signature of ``message`` (``ConfigError`` for a key that only verifies)."""
        ...

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        ...

    @property
    def public(self) -> Key:
        """The key that verifies this key's signatures (itself, for HMAC)."""
        ...


class HmacKey:
    """A team secret: it signs and verifies HMAC-SHA256 signatures.

    >>> key = HmacKey(b"correct horse battery staple")
    >>> key.verify(b"m", key.sign(b"m")), key.verify(b"m", HmacKey(b"x" * 16).sign(b"m"))
    (True, False)
    >>> "horse" in repr(key)
    False
    """

    alg = HMAC
    __slots__ = ("_secret", "id")

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self.id = "hmac:" + hashlib.sha256(b"lazyflow-key-id\0" + secret).hexdigest()[:16]

    def sign(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` under the secret."""
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Compared in constant time."""
        return hmac.compare_digest(self.sign(message), signature)

    @property
    def public(self) -> HmacKey:
        """The key itself: a shared secret verifies what it signs."""
        return self

    def __repr__(self) -> str:
        return f"HmacKey({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HmacKey) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        return HmacKey, (self._secret,)


class Ed25519Key:
    """An Ed25519 key: a public key verifies; with its 32-byte secret seed it also signs.

    Spelt ``ed25519:<base64 public key>`` (share it) and ``ed25519-secret:<base64
    seed>`` (keep it); :func:`generate_ed25519_key` makes a pair. Needs ``cryptography``.
    """

    alg = ED25519
    __slots__ = ("_public", "_seed", "_verifier", "id")

    def __init__(self, public: bytes, seed: bytes | None = None) -> None:
        self._public = public
        self._seed = seed
        self._verifier: Any = None  # cryptography's public key, built at the first verify
        self.id = "ed25519:" + hashlib.sha256(public).hexdigest()[:16]

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Key:
        """The key pair of a 32-byte secret seed."""
        private = _ed25519().Ed25519PrivateKey.from_private_bytes(seed)
        return cls(_raw_public(private.public_key()), seed)

    def sign(self, message: bytes) -> bytes:
        """The Ed25519 signature of ``message`` (needs the secret seed)."""
        if self._seed is None:
            raise ConfigError(f"the Ed25519 key {self.id} is a public key: it verifies, but "
                              "signing needs its secret key (ed25519-secret:...)")
        signature: bytes = _ed25519().Ed25519PrivateKey.from_private_bytes(
            self._seed).sign(message)
        return signature

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether the public key verifies ``signature``."""
        if self._verifier is None:
            self._verifier = _ed25519().Ed25519PublicKey.from_public_bytes(self._public)
        try:
            self._verifier.verify(signature, message)
        except _invalid_signature():
            return False
        return True

    @property
    def public(self) -> Ed25519Key:
        """The public half: it verifies, never signs."""
        return Ed25519Key(self._public)

    @property
    def text(self) -> str:
        """The public key as ``trusted_keys`` takes it: ``ed25519:<base64>``."""
        return "ed25519:" + base64.b64encode(self._public).decode()

    def __repr__(self) -> str:
        return f"Ed25519Key({self.id!r}{', signs' if self._seed is not None else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519Key) and other.id == self.id \
            and (other._seed is None) == (self._seed is None)

    def __hash__(self) -> int:
        return hash(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        return Ed25519Key, (self._public, self._seed)


def generate_ed25519_key() -> tuple[str, str]:
    """A new Ed25519 key pair as text: ``(secret, public)``. Give the secret to the writers
    (``sign_with``, in a key file or ``LAZYFLOW_SIGNING_KEY``), the public key to everyone
    (``trusted_keys``). Needs ``cryptography``."""
    private = _ed25519().Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    seed = private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
    public = _raw_public(private.public_key())
    return ("ed25519-secret:" + base64.b64encode(seed).decode(),
            "ed25519:" + base64.b64encode(public).decode())


@dataclass(frozen=True, repr=False)
class Trust:
    """What a process trusts on a remote, and how it writes there.

    ``signer`` signs what it writes (``None``: it signs nothing); ``trusted`` are the
    keys whose signatures it accepts (the signer's own included). With trusted keys, an
    entry none of them signed is a miss. ``read_only``: nothing is written or deleted.

    >>> trust = Trust.configured(sign_with="a team secret of some length")
    >>> entry = trust.sign("ab" * 16, EntryObject({"digest": "d"}))
    >>> trust.trusts("ab" * 16, entry), trust.trusts("cd" * 16, entry)
    (True, False)
    """

    signer: Key | None = None
    trusted: tuple[Key, ...] = ()
    read_only: bool = False

    @classmethod
    def configured(cls, sign_with: Any = None, trusted_keys: Iterable[Any] = (),
                   read_only: bool = False) -> Trust | None:
        """The trust of ``lf.Cache(sign_with=..., trusted_keys=..., read_only=...)``;
        ``None`` when none is given (every entry is read, as without signatures).

        A key is a secret (``str`` or ``bytes``), a key file (``os.PathLike``) holding one,
        or an Ed25519 key's text; ``ConfigError`` (never showing a secret) otherwise.
        """
        if not isinstance(read_only, bool):
            raise ConfigError(f"read_only must be True or False, got {read_only!r}")
        if isinstance(trusted_keys, (str, bytes, os.PathLike)):
            raise ConfigError("trusted_keys must be a list of keys (secrets, key files or "
                              "public keys), not a single key: write [key]")
        given = list(trusted_keys or ())
        if sign_with is None and not given and not read_only:
            return None
        signer = None if sign_with is None else _key(sign_with, "sign_with", signs=True)
        trusted: list[Key] = [] if signer is None else [signer.public]
        for index, source in enumerate(given):
            key = _key(source, f"trusted_keys[{index}]", signs=False)
            if key not in trusted:
                trusted.append(key)
        return cls(signer, tuple(trusted), read_only or (bool(trusted) and signer is None))

    @property
    def verifies(self) -> bool:
        """Whether entries no trusted key signed are refused."""
        return bool(self.trusted)

    def sign(self, key: str, entry: EntryObject) -> EntryObject:
        """``entry``, to be stored under ``key``, signed by :attr:`signer` (as it is when
        there is none). A value in ``cas/`` must carry its ``sha256``."""
        if self.signer is None:
            return entry
        entry = replace(entry, layout=LAYOUT)  # what is signed is what will be stored
        signed = message(key, entry, parsed=False)
        if signed is None:
            raise ValueError(f"entry {key[:12]}… names content without its sha256: "
                             "sign what Writes.pending built")
        value = base64.b64encode(self.signer.sign(signed)).decode()
        return replace(entry, sig=(Signature(self.signer.id, self.signer.alg, value),))

    def trusts(self, key: str, entry: EntryObject) -> bool:
        """Whether a trusted key signed ``entry`` as the entry of ``key``."""
        candidates = [(trusted, signature) for signature in entry.sig for trusted in self.trusted
                      if trusted.id == signature.key and trusted.alg == signature.alg]
        if not candidates:
            return False
        signed = message(key, entry)
        if signed is None:
            return False
        for trusted, signature in candidates:
            try:
                raw = base64.b64decode(signature.value, validate=True)
            except (binascii.Error, ValueError):
                continue
            if trusted.verify(signed, raw):
                return True
        return False

    def check_content(self, entry: EntryObject, encoded: Encoded) -> None:
        """Raise :class:`CorruptEntryError` unless the downloaded content has the SHA-256
        its signed entry names (done before it is decoded)."""
        if self.verifies and entry.cas is not None and content_sha256(encoded) != entry.sha256:
            raise CorruptEntryError(f"content object {entry.cas[:16]}… does not have the "
                                    "SHA-256 its signed entry names")

    def __repr__(self) -> str:
        parts = [f"signs with {self.signer.id}" if self.signer is not None else "signs nothing"]
        if self.trusted:
            parts.append("trusts " + ", ".join(key.id for key in self.trusted))
        if self.read_only:
            parts.append("read-only")
        return f"Trust({'; '.join(parts)})"


def message(key: str, entry: EntryObject, *, parsed: bool = True) -> bytes | None:
    """The bytes a signature of ``entry`` under ``key`` covers (design note); ``None`` for
    a value in ``cas/`` without its ``sha256``. ``parsed=False``: ``entry.meta`` is what a
    writer holds, put in the form a reader will parse first."""
    if entry.data is not None:
        value = b"data:" + hashlib.sha256(entry.data).hexdigest().encode()
    elif entry.cas is not None:
        if entry.sha256 is None:
            return None
        value = f"cas:{entry.cas}:{entry.sha256}".encode()
        if entry.span is not None:  # a value in a pack: where in it, too
            value += f":{entry.span[0]}:{entry.span[1]}".encode()
    else:
        value = b"record"
    if entry.layout == 2:  # the metadata in its stored order, as layout 2 stored JSON
        meta = dump_meta(entry.meta if parsed else json.loads(dump_meta(entry.meta)))
    else:  # layout 3 stores no field order: the metadata's JSON with sorted keys
        meta = json.dumps(entry.meta if parsed else json.loads(dump_meta(entry.meta)),
                          sort_keys=True, separators=(",", ":"), default=repr).encode()
    return b"\0".join((b"lazyflow-entry", str(entry.layout).encode(), key.encode(), meta,
                       value))


def content_sha256(encoded: Encoded) -> str:
    """SHA-256 (hex) of an encoded value's bytes, header included (what ``cas/`` stores)."""
    digest = hashlib.sha256()
    for chunk in encoded.chunks():
        digest.update(chunk)
    return digest.hexdigest()


_WARNED: set[str] = set()
_WARNED_LOCK = threading.Lock()


def warn_untrusted(url: str) -> None:
    """One :class:`CacheWarning` per process and remote: it holds entries that are ignored."""
    with _WARNED_LOCK:
        first = url not in _WARNED
        _WARNED.add(url)
    if first:
        warnings.warn(
            f"the remote cache {url} holds entries that are unsigned or not signed by a "
            "trusted key; with trusted keys configured they are ignored: computed here "
            "instead, never decoded and never replaced. Have every writer to this remote "
            "sign with a key in trusted_keys (sign_with=...), or give this trust domain "
            "its own remote prefix", CacheWarning, stacklevel=6)


# ----------------------------------------------------------------------------- key sources


def _key(source: Any, where: str, *, signs: bool) -> Key:
    """The key ``source`` spells (a secret, a key file, an Ed25519 key's text)."""
    text = _key_bytes(source, where)
    if text.startswith(_ED_SECRET):
        key = Ed25519Key.from_seed(_base64(text[len(_ED_SECRET):], 32, where))
        return key if signs else key.public
    if text.startswith(_ED_PUBLIC):
        if signs:
            raise ConfigError(f"{where} is an Ed25519 public key, which only verifies: sign "
                              "with its secret key (ed25519-secret:...)")
        return Ed25519Key(_base64(text[len(_ED_PUBLIC):], 32, where))
    if len(text) < MIN_SECRET:
        raise ConfigError(f"{where}: the secret has {len(text)} bytes, fewer than "
                          f"{MIN_SECRET}; make a long random one ({_NEW_SECRET})")
    return HmacKey(text)


def _key_bytes(source: Any, where: str) -> bytes:
    if isinstance(source, os.PathLike):
        path = os.path.expanduser(os.fspath(source))
        try:
            with open(path, "rb") as f:
                return f.read().strip()
        except OSError as e:  # the path is not shown: a secret put where a path goes would be
            raise ConfigError(f"{where}: cannot read the key file it names "
                              f"({e.strerror or type(e).__name__}); give the path of a file "
                              "holding the key (a project file names key files, never "
                              "keys)") from None
    if isinstance(source, bytes):
        return source
    if isinstance(source, str):
        if os.path.isfile(os.path.expanduser(source)):
            raise ConfigError(f"{where} names a file; a str is the secret itself: pass "
                              "pathlib.Path(...) to read the key from that file")
        return source.encode()
    raise ConfigError(f"{where} must be a secret (str or bytes), a key file (pathlib.Path) "
                      f"or an Ed25519 key's text; got a {type(source).__name__}")


def _base64(text: bytes, length: int, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != length:
        raise ConfigError(f"{where} is not an Ed25519 key: expected {length} bytes in "
                          "standard base64 after the prefix")
    return raw


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("Ed25519 keys need the cryptography package (pip install "
                          "cryptography); HMAC secrets need nothing") from None
    return ed25519


def _invalid_signature() -> type[Exception]:
    from cryptography.exceptions import InvalidSignature

    return InvalidSignature


def _raw_public(public: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw
