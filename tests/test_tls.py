"""Transport security: server TLS, and mutual TLS where a client certificate
mapped to a service name authenticates that service without a token."""

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from feedback.v1 import feedback_pb2 as pb
from feedback.v1 import thread_registry_pb2 as registry_pb2
from tests.harness import Client, as_service, as_user, rpc_error, running_server, server_settings

STATS = pb.GetFeedbackStatsRequest(thread_id="t-any", run_id="r-any")
TIMEOUT_S = 10
PLATFORM_SAN = "platform.internal"
BILLING_CN = "billing-worker"
CERTIFICATE_SERVICES = {PLATFORM_SAN: "platform", BILLING_CN: "billing"}


# --- a small PKI ------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    common_name: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    server: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Issued:
    """A certificate signed by issuer (self-signed without one), with an EC P-256 key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    names = [x509.DNSName(name) for name in dns] + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(key, builder.sign(issuer.key if issuer else key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    platform: Issued  # DNS SAN platform.internal: mapped to "platform"
    billing: Issued  # CN only, billing-worker: mapped to "billing"
    stranger: Issued  # right CA, identity mapped to nothing
    impostor: Issued  # claims platform.internal, signed by another CA
    impostor_ca: Issued
    directory: Path

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    ca = issue("Feedback Test CA", ca=True)
    impostor_ca = issue("Another CA", ca=True)
    pki = Pki(
        ca=ca,
        server=issue("localhost", ca, server=True, dns=("localhost",), ips=("127.0.0.1",)),
        platform=issue("platform", ca, dns=(PLATFORM_SAN,)),
        billing=issue(BILLING_CN, ca),
        stranger=issue("stranger", ca, dns=("stranger.internal",)),
        impostor=issue("platform", impostor_ca, dns=(PLATFORM_SAN,)),
        impostor_ca=impostor_ca,
        directory=tmp_path_factory.mktemp("pki"),
    )
    pki.ca_file.write_bytes(ca.pem)
    (pki.directory / "server.pem").write_bytes(pki.server.pem)
    (pki.directory / "server.key").write_bytes(pki.server.key_pem)
    return pki


def tls_settings(tmp_path: Path, pki: Pki, *, mutual: bool, **overrides):
    return server_settings(
        tmp_path,
        tls_cert_file=pki.directory / "server.pem",
        tls_key_file=pki.directory / "server.key",
        tls_client_ca_file=pki.ca_file if mutual else None,
        tls_client_services=CERTIFICATE_SERVICES,
        **overrides,
    )


@contextmanager
def tls_client(address: str, pki: Pki, certificate: Issued | None = None) -> Iterator[Client]:
    """A client that trusts the test CA and presents certificate, if given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.pem,
        private_key=certificate.key_pem if certificate else None,
        certificate_chain=certificate.pem if certificate else None,
    )
    channel = grpc.secure_channel(address, credentials)
    try:
        yield Client(channel)
    finally:
        channel.close()


def stats(client: Client, metadata=()) -> pb.FeedbackStats:
    return client.feedback.GetFeedbackStats(STATS, metadata=metadata, timeout=TIMEOUT_S)


def stats_error(client: Client, metadata=()) -> grpc.RpcError:
    return rpc_error(client.feedback.GetFeedbackStats, STATS, metadata=metadata, timeout=TIMEOUT_S)


def register_thread(client: Client, thread_id: str, owner: str, metadata=()) -> registry_pb2.Thread:
    return client.registry.RegisterThread(
        registry_pb2.RegisterThreadRequest(thread_id=thread_id, owner_user_id=owner),
        metadata=metadata,
        timeout=TIMEOUT_S,
    )


# --- server TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path, pki):
    with running_server(tls_settings(tmp_path, pki, mutual=False)) as (server, plaintext):
        yield server, plaintext


def test_tls_with_a_user_token(tls_server, pki):
    server, _ = tls_server
    with tls_client(server.address, pki) as client:
        assert stats(client, as_user("alice")).run_id == "r-any"
        assert stats_error(client).code() == grpc.StatusCode.UNAUTHENTICATED


def test_plaintext_to_the_tls_port_fails(tls_server):
    _, plaintext = tls_server
    assert stats_error(plaintext, as_user("alice")).code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_server_certificate_fails(tls_server, pki):
    server, _ = tls_server
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.impostor_ca.pem)
    with grpc.secure_channel(server.address, credentials) as channel:
        error = stats_error(Client(channel), as_user("alice"))
    assert error.code() == grpc.StatusCode.UNAVAILABLE


def test_without_a_client_ca_a_certificate_makes_no_service(tls_server, pki):
    """Only mutual TLS verifies client certificates, so only it maps them to services."""
    server, _ = tls_server
    with tls_client(server.address, pki, pki.platform) as client:
        error = rpc_error(client.registry.RegisterThread, registry_pb2.RegisterThreadRequest(thread_id="t1"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert stats(client, as_user("alice")).total == 0


# --- mutual TLS -------------------------------------------------------------------------


@pytest.fixture
def mtls_server(tmp_path, pki):
    with running_server(tls_settings(tmp_path, pki, mutual=True)) as (server, _):
        yield server


def test_a_client_without_a_certificate_is_refused_at_the_handshake(mtls_server, pki):
    with tls_client(mtls_server.address, pki) as client:
        assert stats_error(client, as_user("alice")).code() == grpc.StatusCode.UNAVAILABLE
        # Credentials in metadata do not stand in for the certificate.
        assert stats_error(client, as_service()).code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused(mtls_server, pki):
    with tls_client(mtls_server.address, pki, pki.impostor) as client:
        assert stats_error(client).code() == grpc.StatusCode.UNAVAILABLE
        assert stats_error(client, as_user("alice")).code() == grpc.StatusCode.UNAVAILABLE


def test_a_mapped_certificate_acts_as_its_service_without_a_token(mtls_server, pki):
    with tls_client(mtls_server.address, pki, pki.platform) as client:
        # Service-only RPCs, with no token at all.
        thread = register_thread(client, "t-alice", "alice")
        assert thread.owner_user_id == "alice"
        client.registry.RegisterRun(
            registry_pb2.RegisterRunRequest(thread_id="t-alice", run_id="r1"), timeout=TIMEOUT_S
        )

        # With x-on-behalf-of it acts as that user.
        alice = [("x-on-behalf-of", "alice")]
        created = client.feedback.CreateFeedback(
            pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=1),
            metadata=alice,
            timeout=TIMEOUT_S,
        )
        assert created.user_id == "alice"
        # ...and sees only what that user may: bob cannot see alice's thread.
        error = rpc_error(
            client.feedback.CreateFeedback,
            pb.CreateFeedbackRequest(thread_id="t-alice", run_id="r1", rating=-1),
            metadata=[("x-on-behalf-of", "bob")],
            timeout=TIMEOUT_S,
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        # A delegated call is no longer the service itself.
        error = rpc_error(
            client.registry.RegisterThread,
            registry_pb2.RegisterThreadRequest(thread_id="t-other"),
            metadata=alice,
            timeout=TIMEOUT_S,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

        # A user token sent over the service's connection authenticates that user instead.
        error = rpc_error(
            client.registry.RegisterThread,
            registry_pb2.RegisterThreadRequest(thread_id="t-other"),
            metadata=as_user("alice"),
            timeout=TIMEOUT_S,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

    # The feedback is alice's own, as she sees it with her token.
    with tls_client(mtls_server.address, pki, pki.stranger) as client:
        listed = client.feedback.ListFeedback(
            pb.ListFeedbackRequest(thread_id="t-alice", run_id="r1"),
            metadata=as_user("alice"),
            timeout=TIMEOUT_S,
        )
        assert [(f.feedback_id, f.user_id) for f in listed.feedback] == [(created.feedback_id, "alice")]


def test_a_bad_on_behalf_of_with_a_certificate_is_invalid(mtls_server, pki):
    with tls_client(mtls_server.address, pki, pki.platform) as client:
        error = stats_error(client, [("x-on-behalf-of", "alice smith")])
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_unmapped_certificate_needs_other_credentials(mtls_server, pki):
    with tls_client(mtls_server.address, pki, pki.stranger) as client:
        error = stats_error(client)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing credentials" in error.details()
        # It cannot name a user to act for either.
        assert stats_error(client, [("x-on-behalf-of", "alice")]).code() == grpc.StatusCode.UNAUTHENTICATED
        error = rpc_error(client.registry.RegisterThread, registry_pb2.RegisterThreadRequest(thread_id="t1"))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED

        # With a user token it works as that user (and only as a user).
        assert stats(client, as_user("alice")).run_id == "r-any"
        error = rpc_error(
            client.registry.RegisterThread,
            registry_pb2.RegisterThreadRequest(thread_id="t1"),
            metadata=as_user("alice"),
            timeout=TIMEOUT_S,
        )
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        # A service token still works over it.
        assert register_thread(client, "t1", "", as_service()).thread_id == "t1"


def test_a_certificate_mapped_by_its_common_name(mtls_server, pki):
    with pytest.raises(x509.ExtensionNotFound):  # the common name is its only identity
        pki.billing.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    with tls_client(mtls_server.address, pki, pki.billing) as client:
        assert register_thread(client, "t-billing", "carol").owner_user_id == "carol"
        assert stats(client, [("x-on-behalf-of", "carol")]).total == 0
