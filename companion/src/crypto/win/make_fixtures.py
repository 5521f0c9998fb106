"""Makes scenario-crl.der and scenario-ctl.der: an empty CRL and a CTL (PKCS #7 signed, one
code-signing usage) of a throw-away EC P-256 issuer, for the crypto scenarios that hold CRL and
CTL contexts. Needs python3 with the `cryptography` package and openssl (for `cms -sign`, which
sets the CTL content type). Run it in this directory; the issuer key is not kept."""
import datetime
import os
import subprocess
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def tlv(tag, body):
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x81, n]) if n < 0x100 else bytes([0x82, n >> 8, n & 0xFF])
    return bytes([tag]) + length + body


def oid(dotted):
    parts = [int(p) for p in dotted.split(".")]
    out = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        enc = [p & 0x7F]
        p >>= 7
        while p:
            enc.insert(0, 0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(enc)
    return tlv(0x06, out)


def parse(data, at=0):
    """(tag, header length, body length) of the TLV at `at`."""
    tag, first = data[at], data[at + 1]
    if first < 0x80:
        return tag, 2, first
    count = first & 0x7F
    return tag, 2 + count, int.from_bytes(data[at + 2:at + 2 + count], "big")


def pkcs7_content(cms):
    """CMS wraps a non-data eContent in an OCTET STRING; PKCS #7 (what CTLs use, and what
    crypt32 decodes) puts the content itself under [0]: rebuild ContentInfo that way."""
    _, h, _ = parse(cms)                      # ContentInfo SEQUENCE
    at = h
    _, h2, n2 = parse(cms, at)                # contentType OID
    at += h2 + n2
    _, h3, _ = parse(cms, at)                 # [0] EXPLICIT
    at += h3
    _, h4, _ = parse(cms, at)                 # SignedData SEQUENCE
    signed_start, signed_body = at + h4, at + h4
    fields, cursor = [], signed_body
    end = at + h4 + parse(cms, at)[2]
    while cursor < end:
        tag, hh, nn = parse(cms, cursor)
        fields.append(cms[cursor:cursor + hh + nn])
        cursor += hh + nn
    encap = fields[2]                         # version, digestAlgorithms, encapContentInfo, ...
    _, eh, _ = parse(encap)
    _, oh, on = parse(encap, eh)
    content_type = encap[eh:eh + oh + on]
    _, xh, _ = parse(encap, eh + oh + on)
    _, sh, sn = parse(encap, eh + oh + on + xh)
    inner = encap[eh + oh + on + xh + sh:eh + oh + on + xh + sh + sn]
    fields[0] = tlv(0x02, b"\x01")            # PKCS #7 SignedData version 1
    fields[2] = tlv(0x30, content_type + tlv(0xA0, inner))
    signed = tlv(0x30, b"".join(fields))
    return tlv(0x30, cms[h:h + h2 + n2] + tlv(0xA0, signed))


key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ctxguard crypto scenario issuer")])
start = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
far = start + datetime.timedelta(days=36500)
issuer = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
          .serial_number(2).not_valid_before(start).not_valid_after(far).sign(key, hashes.SHA256()))
crl = x509.CertificateRevocationListBuilder().issuer_name(name).last_update(start).next_update(far).sign(key, hashes.SHA256())
with open("scenario-crl.der", "wb") as f:
    f.write(crl.public_bytes(serialization.Encoding.DER))

# CertificateTrustList: SubjectUsage (code signing), ThisUpdate, SubjectAlgorithm (SHA-1).
ctl = tlv(0x30, tlv(0x30, oid("1.3.6.1.5.5.7.3.3")) + tlv(0x17, b"260101000000Z") + tlv(0x30, oid("1.3.14.3.2.26") + b"\x05\x00"))
with tempfile.TemporaryDirectory() as tmp:
    paths = {n: os.path.join(tmp, n) for n in ("content.der", "issuer.pem", "issuer.key")}
    with open(paths["content.der"], "wb") as f:
        f.write(ctl)
    with open(paths["issuer.pem"], "wb") as f:
        f.write(issuer.public_bytes(serialization.Encoding.PEM))
    with open(paths["issuer.key"], "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-nodetach", "-nosmimecap", "-md", "sha256",
                    "-in", paths["content.der"], "-inform", "DER", "-econtent_type", "1.3.6.1.4.1.311.10.1",
                    "-signer", paths["issuer.pem"], "-inkey", paths["issuer.key"],
                    "-outform", "DER", "-out", os.path.join(tmp, "cms.der")], check=True)
    with open(os.path.join(tmp, "cms.der"), "rb") as f:
        cms = f.read()
with open("scenario-ctl.der", "wb") as f:
    f.write(pkcs7_content(cms))
