"""Trust: who a node is, who vouches for it, and the record of what was done (DESIGN §5).

One concept per module, lower ones first (each imports only those above it):

    tls.py            a node's TLS files: where they are, how they are written, what they say
    ca.py             the provincial CA: its key and certificate, and its registry (issued.db)
    issue.py          certificates from requests: the node's CSR, the CA's signature (offline path)
    crl.py            the CA's revocation list: the signed X.509 CRL, written and read
    publish.py        what the CA's home publishes into its store: the CRL, the parent links
    renewal.py        certificates that renew themselves over the replication link
    audit_chain.py    the audit log's entries, hash chain, heads and verification
    audit.py          the audit log file (audit.db): open, append, read, verify, export
    refusals.py       refused TLS handshakes counted per source and reason, audited once a window
    audit_mirror.py   the audit log's entries copied into the store, so they go up to the province
    audit_copies.py   the audit entries other nodes sent up, per node, checked as chains
    tokens.py         one-time enrollment tokens and the province's token store (enroll.db)
    ratelimit.py      guessing limits per peer address for the enrollment service
    enroll_server.py  enrollment, the province's half: the listener that spends tokens
    enroll_client.py  enrollment, the new node's half: pin the CA, send the CSR, keep the result

Every SQLite file here (issued.db, enroll.db, audit.db) is brought up to date by
numbered migrations through `lienthong.sync.sqlite.migrate`.
"""
