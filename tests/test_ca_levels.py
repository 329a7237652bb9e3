"""The two-level CA: an offline root signs an issuing CA kept at the province. Nodes trust the
root and present their chain; enrollment and renewal need only the issuing key; the issuing CA
is replaced by the root without re-enrolling anyone. A single-level CA directory keeps working."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cryptography import x509

from lienthong.node.trust import root
from lienthong.node.trust.renewal import renewal_due

from .conftest import listen_address
from .helpers import NodeProcess, cli, fill, indicator_rows, running, status, versions, wait_until
from .test_renewal import age_certificate

pytestmark = pytest.mark.slow


def chain(node: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((node / "tls" / "node.crt").read_bytes())


def serial(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def age(node: Path, ca_dir: Path) -> str:
    """The node's certificate made old (renewal due), still presented with its issuing CA."""
    issuing = (node / "tls" / "node.crt").read_bytes().split(b"-----END CERTIFICATE-----\n", 1)[1]
    made = age_certificate(node, ca_dir)
    path = node / "tls" / "node.crt"
    path.write_bytes(path.read_bytes() + issuing)
    return made


def province_with_enrollment(tmp_path: Path, ca_dir: Path) -> Path:
    from .conftest import ADDRESSES
    from .helpers import relay

    province = tmp_path / "86"
    cli("init", "--dir", str(province), "--mode", "provincial", "--id", "86", "--listen", "127.0.0.1:0", "--ca", str(ca_dir))
    ADDRESSES[province] = f"127.0.0.1:{relay(province).port}"
    config = province / "lienthong.toml"
    text = config.read_text().replace('enroll_listen = ""', 'enroll_listen = "127.0.0.1:0"').replace('ca_dir = ""', f'ca_dir = "{ca_dir}"')
    config.write_text(text.replace("backoff_max = 30.0", "backoff_max = 1.0"))
    return province


def commune(tmp_path: Path, ca_dir: Path, province: Path, node_id: str) -> Path:
    node = tmp_path / node_id
    cli("init", "--dir", str(node), "--mode", "district", "--id", node_id, "--parent", listen_address(province), "--ca", str(ca_dir))
    config = node / "lienthong.toml"
    config.write_text(config.read_text().replace("backoff_max = 30.0", "backoff_max = 1.0"))
    return node


def test_enrollment_and_renewal_work_with_the_root_key_offline(tmp_path: Path) -> None:
    """`ca init` makes a root and an issuing CA; the root key is moved offline; a province and a commune
    are made from the CA, a new node enrolls with a token, the commune renews: all with the root key gone."""
    ca_dir = tmp_path / "ca"
    out = cli("ca", "init", str(ca_dir), "--name", "CA tỉnh Vĩnh Long")
    assert "move" in out.stdout and "root.key" in out.stdout
    offline = tmp_path / "usb"
    offline.mkdir()
    (ca_dir / "root.key").rename(offline / "root.key")  # the ceremony: the root key leaves the machine

    province = province_with_enrollment(tmp_path, ca_dir)
    first = commune(tmp_path, ca_dir, province, "86-28894")
    anchor = (ca_dir / "root.crt").read_bytes()
    for node in (province, first):
        assert (node / "tls" / "ca.crt").read_bytes() == anchor  # nodes trust the root
        leaf, issuing = chain(node)  # and present their issuing CA after their own certificate
        assert issuing.subject == leaf.issuer and serial(issuing) == serial(
            x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
        )
    fill(first, indicator_rows("86-28894", 10))
    aged = age(first, ca_dir)
    newcomer = tmp_path / "86-29560"
    cli("init", "--dir", str(newcomer), "--mode", "district", "--id", "86-29560", "--parent", listen_address(province), "--parent-id", "86")

    with running(NodeProcess(province), NodeProcess(first)) as (prov, _):
        enroll_port = prov.port("enroll_port")
        config = province / "lienthong.toml"
        config.write_text(config.read_text().replace('enroll_address = ""', f'enroll_address = "127.0.0.1:{enroll_port}"'))
        token = cli("token", "create", "--dir", str(province), "--id", "86-29560").stdout.strip()
        assert "Enrolled with 86" in cli("enroll", "--dir", str(newcomer), token).stdout
        assert (newcomer / "tls" / "ca.crt").read_bytes() == anchor and len(chain(newcomer)) == 2
        wait_until(lambda: serial(chain(first)[0]) != aged, timeout=60, what="the commune to renew")
        fill(first, indicator_rows("86-28894", 20))
        with running(NodeProcess(newcomer)):
            wait_until(lambda: status(newcomer)["parent"]["connected"], timeout=30, what="the enrolled node to connect")
        wait_until(lambda: len(versions(province, origin="86-28894")) == 20, timeout=30, what="the commune's records")
    assert not renewal_due((first / "tls" / "node.crt").read_bytes()) and len(chain(first)) == 2
    assert not (ca_dir / "root.key").exists()
    report = json.loads(cli("verify", "--dir", str(province), "--json").stdout)
    assert report["ok"], report["findings"][:3]


def test_a_compromised_issuing_ca_is_replaced_without_re_enrolling(tmp_path: Path) -> None:
    """With the root key brought back, `ca rotate-issuing` makes a new issuing CA. Nodes holding
    certificates of the old one keep their trust (the root), still connect, renew onto the new issuing
    CA over the link, and everything sealed before and after verifies. Whoever stole the old issuing
    key mints a certificate with it: the province refuses that certificate at once (the root's CRL,
    published by the CA's home), though the genuine ones of the same issuer still work."""
    ca_dir = tmp_path / "ca"
    cli("ca", "init", str(ca_dir), "--name", "CA tỉnh")
    province = province_with_enrollment(tmp_path, ca_dir)
    first = commune(tmp_path, ca_dir, province, "86-28894")
    fill(first, indicator_rows("86-28894", 10))
    old_issuing = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    aged = {node: age(node, ca_dir) for node in (province, first)}  # due for renewal, under the old issuing CA
    assert all(chain(node)[0].issuer == old_issuing.subject for node in aged)
    stolen = tmp_path / "stolen"  # the thief's copy: the issuing key (and a registry the province never sees again)
    shutil.copytree(ca_dir, stolen, ignore=shutil.ignore_patterns("root.key"))

    out = cli("ca", "rotate-issuing", str(ca_dir), "--reason", "key_compromise")
    assert "revoked" in out.stdout
    new_issuing = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    assert new_issuing.serial_number != old_issuing.serial_number and root.revoked_issuers(ca_dir) == [serial(old_issuing)]
    forged = commune(tmp_path, stolen, province, "86-31117")  # minted after the rotation with the stolen key
    assert chain(forged)[0].issuer == old_issuing.subject
    fill(forged, indicator_rows("86-31117", 5))
    with running(NodeProcess(province), NodeProcess(first), NodeProcess(forged)) as (prov, _, thief):
        for node, made in aged.items():
            wait_until(lambda node=node, made=made: serial(chain(node)[0]) != made, timeout=60, what=f"{node.name} to renew")
        fill(first, indicator_rows("86-28894", 20))
        wait_until(lambda: len(versions(province, origin="86-28894")) == 20, timeout=30, what="records after the rotation")
        wait_until(lambda: "which the root revoked" in thief.log(), timeout=30, what="the forged node to be refused")
        assert "revoked issuing CA" in prov.log() and not status(forged)["parent"]["connected"]
    assert not versions(province, origin="86-31117")
    cli("audit", "export", "--dir", str(province), str(tmp_path / "audit.jsonl"))
    refusals = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["action"] == "connection.refused" and e["subject"] == "86-31117" for e in refusals)
    for node in (province, first):
        leaf, issuing = chain(node)
        assert serial(issuing) == serial(new_issuing) and leaf.issuer == new_issuing.subject
        assert (node / "tls" / "ca.crt").read_bytes() == (ca_dir / "root.crt").read_bytes()  # trust unchanged
    report = json.loads(cli("verify", "--dir", str(province), "--json").stdout)
    assert report["ok"], report["findings"][:3]
    # The root key is needed for this ceremony only: without it, rotation is refused in words.
    (ca_dir / "root.key").unlink()
    refused = cli("ca", "rotate-issuing", str(ca_dir), check=False)
    assert refused.returncode == 1 and "kept offline" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("levels", [1, 2])
def test_chains_seals_and_the_crl_verify_up_to_the_anchor(tmp_path: Path, levels: int) -> None:
    """Both kinds of CA directory: a node's certificate (with its issuing CA) verifies against what
    nodes trust, a certificate of another CA does not, and the CA's revocation list is accepted."""
    from lienthong.node.trust import ca, crl, issue, tls
    from lienthong.sync import provenance

    ca_dir = tmp_path / "ca"
    if levels == 2:
        root.init_two_level(ca_dir, "CA", None)
    else:
        ca.init_ca(ca_dir, "CA")  # a CA directory made before the two levels
    paths = tls.NodeTlsPaths(tmp_path / "n" / "ca.crt", tmp_path / "n" / "node.crt", tmp_path / "n" / "node.key")
    issue.issue_node(ca_dir, paths, "86-1", "district", [])
    anchor = x509.load_pem_x509_certificate(paths.ca.read_bytes())
    certs = x509.load_pem_x509_certificates(paths.cert.read_bytes())
    assert len(certs) == levels and anchor.subject == anchor.issuer
    from cryptography.hazmat.primitives.serialization import Encoding

    der = b"".join(c.public_bytes(Encoding.DER) for c in certs)
    assert provenance.check_certificate(der, anchor).problem == ""
    if levels == 2:  # the node's certificate alone does not reach the root: the issuing CA must ride with it
        assert provenance.check_certificate(certs[0].public_bytes(Encoding.DER), anchor).problem
        assert provenance.check_certificate(certs[0].public_bytes(Encoding.DER) * 2, anchor).problem
    other = tmp_path / "other"
    root.init_two_level(other, "Other", None)
    foreign = x509.load_pem_x509_certificate((other / "root.crt").read_bytes())
    assert provenance.check_certificate(der, foreign).problem == "the seal's certificate was not issued by this province's CA"
    ca.revoke(ca_dir, "86-1", "key_compromise")
    assert crl.read_crl(crl.write_crl(ca_dir), paths.ca.read_bytes()) == [format(certs[0].serial_number, "x")]
    assert (
        ca.ca_fingerprint(ca_dir)
        == anchor.fingerprint(__import__("cryptography.hazmat.primitives.hashes").hazmat.primitives.hashes.SHA256()).hex()
    )
