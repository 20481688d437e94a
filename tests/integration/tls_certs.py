"""Test certificates for pacsnode's DICOM TLS tests, made with the openssl
command line only (OpenSSL 3.0: `openssl ca` for chosen validity dates,
revocation and the CRL, since `x509 -req` cannot set notBefore).

    pki = tls_certs.generate(directory)   # once; then tls_certs.Pki(directory)

Everything is RSA 2048 (an RSA server key gives the ECDHE-RSA suites on
TLS 1.2, and DHE-RSA would be possible, so refusing it means something).
What is made, each as NAME.pem (certificate) and NAME.key (unencrypted
PKCS#8 private key):

- ca: the test CA ("Pacsnode Test CA"); ca.pem, and ca-dir/ (hashed, the
  `openssl rehash` form of a CA folder)
- other-ca: a second CA nobody trusts (other-ca.pem)
- node: the node's certificate, CN=pacsnode, SAN IP:127.0.0.1, DNS:localhost,
  serverAuth + clientAuth (the node also presents it on outgoing TLS)
- dest: a server certificate for storescp as a C-MOVE destination (same SAN)
- dest-untrusted: the same from other-ca
- good, good2: valid client certificates (CN=modality1 / CN=modality2,
  O=Test Hospital)
- expired (2020-2021), notyet (2040-2041): from the CA, otherwise good
- untrusted: a client certificate from other-ca
- revoked: from the CA, revoked in crl.pem (the CA's CRL, valid 30 days)
- encrypted.key: the node key encrypted with AES-256 (passphrase "x"),
  for the node's refusal to start
"""

import fcntl
import os
import shutil
import subprocess

RSA_BITS = 2048
PAST = "20200101000000Z"     # before anything this test suite runs
FAR = "20491231235959Z"      # good certificates and the CAs: valid until then
VALID_FROM = "20240101000000Z"
SUBJECT_BASE = "/O=Test Hospital"

# name: (issuing CA, subject CN, extensions section, startdate, enddate)
LEAVES = {
    "node": ("ca", "pacsnode", "server_ext", VALID_FROM, FAR),
    "dest": ("ca", "destination", "server_ext", VALID_FROM, FAR),
    "dest-untrusted": ("other-ca", "destination", "server_ext", VALID_FROM, FAR),
    "good": ("ca", "modality1", "client_ext", VALID_FROM, FAR),
    "good2": ("ca", "modality2", "client_ext", VALID_FROM, FAR),
    "expired": ("ca", "expired modality", "client_ext", PAST, "20210101000000Z"),
    "notyet": ("ca", "future modality", "client_ext", "20400101000000Z", "20410101000000Z"),
    "untrusted": ("other-ca", "modality1", "client_ext", VALID_FROM, FAR),
    "revoked": ("ca", "revoked modality", "client_ext", VALID_FROM, FAR),
}
CAS = {"ca": "Pacsnode Test CA", "other-ca": "Untrusted Other CA"}

CA_CONFIG = """\
[ca]
default_ca = this_ca

[this_ca]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
default_days = 3650
default_crl_days = 30
policy = any_policy
unique_subject = no
copy_extensions = none
email_in_dn = no

[any_policy]
organizationName = optional
commonName = supplied

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[req]
distinguished_name = req_dn
prompt = no
[req_dn]
CN = unused
"""


class OpensslError(Exception):
    pass


def openssl(*args, cwd=None, input=None):
    """Runs `openssl ARGS`; its output, or OpensslError with what it said."""
    if shutil.which("openssl") is None:
        raise OpensslError("the openssl command line tool is not installed")
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=60)
    if r.returncode != 0:
        raise OpensslError("openssl %s failed (%d):\n%s" % (" ".join(args), r.returncode, r.stdout))
    return r.stdout


def _ca_dir(root, ca):
    return os.path.join(root, "_" + ca)


def _new_key(path):
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % RSA_BITS,
            "-out", path)


def _make_ca(root, ca):
    d = _ca_dir(root, ca)
    os.makedirs(os.path.join(d, "newcerts"))
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, "crlnumber"), "w") as f:
        f.write("01\n")
    cnf = os.path.join(d, "ca.cnf")
    with open(cnf, "w") as f:
        f.write(CA_CONFIG.format(dir=d))
    key = os.path.join(d, "ca.key")
    _new_key(key)
    csr = os.path.join(d, "ca.csr")
    openssl("req", "-new", "-config", cnf, "-key", key, "-subj",
            "%s/CN=%s" % (SUBJECT_BASE, CAS[ca]), "-out", csr)
    openssl("ca", "-batch", "-config", cnf, "-selfsign", "-keyfile", key, "-in", csr,
            "-extensions", "ca_ext", "-startdate", PAST, "-enddate", FAR, "-notext",
            "-out", os.path.join(d, "ca.pem"))
    shutil.copy(os.path.join(d, "ca.pem"), os.path.join(root, ca + ".pem"))
    return cnf


def _issue(root, cnfs, name, ca, cn, ext, start, end):
    key = os.path.join(root, name + ".key")
    _new_key(key)
    csr = os.path.join(_ca_dir(root, ca), name + ".csr")
    openssl("req", "-new", "-config", cnfs[ca], "-key", key, "-subj",
            "%s/CN=%s" % (SUBJECT_BASE, cn), "-out", csr)
    openssl("ca", "-batch", "-config", cnfs[ca], "-in", csr, "-extensions", ext,
            "-startdate", start, "-enddate", end, "-notext", "-out",
            os.path.join(root, name + ".pem"))


def generate(root):
    """Makes the whole set into `root` (created; must not exist yet or be
    empty). Returns a Pki."""
    os.makedirs(root, exist_ok=True)
    cnfs = {ca: _make_ca(root, ca) for ca in CAS}
    for name, (ca, cn, ext, start, end) in LEAVES.items():
        _issue(root, cnfs, name, ca, cn, ext, start, end)
    # revocation and the CRL (CRL valid from now for 30 days)
    openssl("ca", "-batch", "-config", cnfs["ca"], "-revoke", os.path.join(root, "revoked.pem"),
            "-crl_reason", "keyCompromise")
    openssl("ca", "-batch", "-config", cnfs["ca"], "-gencrl", "-out", os.path.join(root, "crl.pem"))
    # the node's key, encrypted
    openssl("pkey", "-in", os.path.join(root, "node.key"), "-aes256", "-passout", "pass:x",
            "-out", os.path.join(root, "encrypted.key"))
    # a CA folder in hashed form
    cadir = os.path.join(root, "ca-dir")
    os.makedirs(cadir)
    shutil.copy(os.path.join(root, "ca.pem"), os.path.join(cadir, "ca.pem"))
    openssl("rehash", cadir)
    # what a reader of this folder needs to see at a glance
    with open(os.path.join(root, "README"), "w") as f:
        f.write(__doc__)
    return Pki(root)


def generate_once(root):
    """generate(root) unless another process (xdist worker) did already;
    a lock file beside `root` serialises the workers."""
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    with open(root.rstrip("/") + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = os.path.join(root, "done")
        if not os.path.exists(done):
            if os.path.exists(root):
                shutil.rmtree(root)
            generate(root)
            with open(done, "w") as f:
                f.write("ok\n")
    return Pki(root)


class Pki:
    """Paths of a generated set. pki.cert("good"), pki.key("good")."""

    def __init__(self, root):
        self.dir = os.path.abspath(root)
        self.ca = self.path("ca.pem")
        self.other_ca = self.path("other-ca.pem")
        self.ca_dir = self.path("ca-dir")
        self.crl = self.path("crl.pem")
        self.encrypted_key = self.path("encrypted.key")

    def path(self, name):
        return os.path.join(self.dir, name)

    def cert(self, name):
        return self.path(name + ".pem")

    def key(self, name):
        return self.path(name + ".key")

    def copy_to(self, target, user=None):
        """A copy of the whole set in `target` (readable by `user`, who owns
        the private keys, mode 0600): the node runs unprivileged and must be
        able to read its own key."""
        import pacsnode_harness as H
        shutil.copytree(self.dir, target, ignore=shutil.ignore_patterns("_*"))
        H.chown_to(target, user)
        os.chmod(target, 0o755)
        for dirpath, dirnames, filenames in os.walk(target):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
                H.chown_to(os.path.join(dirpath, d), user)
            for f in filenames:
                p = os.path.join(dirpath, f)
                if os.path.islink(p):
                    continue
                os.chmod(p, 0o600 if f.endswith(".key") else 0o644)
                H.chown_to(p, user)
        return Pki(target)


def sha256_fingerprint(cert):
    """"AB:CD:..." as `openssl x509 -noout -fingerprint -sha256` prints it."""
    out = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", cert).strip()
    # "sha256 Fingerprint=AB:CD:..." (OpenSSL 3) / "SHA256 Fingerprint=..." (1.1)
    return out.split("=", 1)[1].strip()


def subject_rfc2253(cert):
    """The subject as `openssl x509 -noout -subject -nameopt RFC2253` prints
    it, without "subject="."""
    out = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", cert).strip()
    assert out.startswith("subject="), out
    return out[len("subject="):].strip()


def verify(cert, ca, crl=None):
    """(ok, openssl's words) of `openssl verify` against `ca` (and `crl`)."""
    args = ["verify", "-CAfile", ca]
    if crl:
        args += ["-crl_check", "-CRLfile", crl]
    try:
        return True, openssl(*(args + [cert]))
    except OpensslError as e:
        return False, str(e)
