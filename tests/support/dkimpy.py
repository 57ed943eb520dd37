#!/usr/bin/python3
"""dkimpy (Debian's python3-dkim) for the tests, its DNS pointed at the test server.

    dkimpy.py PORT dkim   < message   prints "pass" (exit 0) or "fail ..." (exit 1)
    dkimpy.py PORT arc    < message   prints "pass|fail|none <comment>" (exit 0 on pass)
    dkimpy.py PORT sign SELECTOR DOMAIN KEYFILE < message   prints the signed message

dkimpy looks TXT records up with dnspython (python3-dnspython) through the module's
default resolver: replaced here by one that asks 127.0.0.1:PORT only.
"""
import sys

import dns.resolver

resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = int(sys.argv[1])
resolver.timeout = 5
resolver.lifetime = 5
dns.resolver.default_resolver = resolver

import dkim  # noqa: E402  (after the resolver is set)

mode = sys.argv[2]
message = sys.stdin.buffer.read()
if mode == "dkim":
    d = dkim.DKIM(message)
    ok = d.verify()
    print("pass" if ok else "fail")
    sys.exit(0 if ok else 1)
elif mode == "arc":
    cv, _results, comment = dkim.arc_verify(message)
    print(cv.decode(), comment)
    sys.exit(0 if cv == b"pass" else 1)
elif mode == "sign":
    selector, domain, keyfile = sys.argv[3:6]
    with open(keyfile, "rb") as f:
        key = f.read()
    sig = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    sys.stdout.buffer.write(sig + message)
else:
    sys.exit("unknown mode " + mode)
