"""Who may talk to the hub: ZeroMQ CURVE keys and the hub's ZAP gatekeeper.

The internal endpoint always uses CURVE: the supervisor makes a fresh keypair for the hub and
one for its publishers at every `streamctl up` (`plant_keys`) and hands them to the children in
their specs, in memory through the forkserver, never on disk. The hub's gatekeeper accepts only
the plant's client key there, so another process (even of the same user) cannot publish into
the plant. The public endpoint uses CURVE only when ``publish.curve`` names key files made with
`streamctl keys` (`load_server`, `load_client`); keys are Z85 text, as ZeroMQ's tools write them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

__all__ = ["CurveServer", "CurveClient", "Gatekeeper", "plant_keys", "read_key", "read_public_keys", "load_server",
           "load_client", "INTERNAL_DOMAIN", "PUBLIC_DOMAIN"]

INTERNAL_DOMAIN = "streamctl-internal"
PUBLIC_DOMAIN = "streamctl-public"

log = logging.getLogger("streamctl.hub")


class CurveServer(msgspec.Struct, kw_only=True, frozen=True):
    """A bound socket's side: its secret key and the client public keys it lets in."""

    secret_key: bytes
    clients: frozenset[bytes]

    def apply(self, sock: zmq.Socket, domain: str) -> None:
        """Make `sock` a CURVE server whose peers the gatekeeper checks in `domain` (before bind)."""
        sock.zap_domain = domain.encode()
        sock.curve_server = True
        sock.curve_secretkey = self.secret_key


class CurveClient(msgspec.Struct, kw_only=True, frozen=True):
    """A connecting socket's side: the server's public key and this client's keypair."""

    server_key: bytes
    public_key: bytes
    secret_key: bytes

    def apply(self, sock: zmq.Socket) -> None:
        """Make `sock` a CURVE client (before connect)."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public_key
        sock.curve_secretkey = self.secret_key


def plant_keys() -> tuple[CurveServer, CurveClient]:
    """Fresh keys for one plant run: the hub's internal side and its publishers' side."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return (CurveServer(secret_key=server_secret, clients=frozenset({client_public})),
            CurveClient(server_key=server_public, public_key=client_public, secret_key=client_secret))


def read_key(path: str | Path, *, secret: bool) -> bytes:
    """The public (or, with `secret`, the secret) key of a key file made by `streamctl keys`
    (`zmq.auth.create_certificates`); ValueError saying what is wrong with the file."""
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read key file {path}: {exc}") from None
    if not secret:
        return public
    if not secret_key:
        raise ValueError(f"{path} holds no secret key (use the `.key_secret` file)")
    return secret_key


def read_public_keys(directory: str | Path) -> frozenset[bytes]:
    """The public keys of every ``*.key`` file in `directory` (at least one)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"{directory} is not a directory")
    keys = frozenset(read_key(path, secret=False) for path in sorted(directory.glob("*.key")))
    if not keys:
        raise ValueError(f"{directory} holds no `*.key` file")
    return keys


def load_server(secret_key_file: str | Path, client_keys_dir: str | Path) -> CurveServer:
    """The public endpoint's keys: its secret key file and a directory of allowed ``*.key`` files."""
    return CurveServer(secret_key=read_key(secret_key_file, secret=True), clients=read_public_keys(client_keys_dir))


def load_client(server_key_file: str | Path, client_key_file: str | Path) -> CurveClient:
    """A subscriber's keys: the plant's public key file and this client's secret key file."""
    return CurveClient(server_key=read_key(server_key_file, secret=False),
                       public_key=read_key(client_key_file, secret=False),
                       secret_key=read_key(client_key_file, secret=True))


class Gatekeeper:
    """The ZAP handler of one context: lets in, per domain, only the clients its server allows.

    Runs pyzmq's `ThreadAuthenticator` (a thread answering libzmq's ZAP requests); `refused`
    counts the handshakes it turned away, and the first refusal per domain is logged.
    """

    def __init__(self, context: zmq.Context, servers: dict[str, CurveServer]):
        self._allowed = {domain: server.clients for domain, server in servers.items()}
        self.refused = 0
        self._logged: set[str] = set()
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("streamctl.zap"))
        self._auth.start()
        for domain in servers:
            self._auth.configure_curve_callback(domain, self)

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator with the client's Z85 public key."""
        if key in self._allowed.get(domain, ()):
            return True
        self.refused += 1
        if domain not in self._logged:
            self._logged.add(domain)
            log.warning("refused a connection with an unknown CURVE key on %s (further refusals are counted)",
                        domain)
        return False

    def stop(self) -> None:
        self._auth.stop()
