#!/usr/bin/env python3
"""The code of the zygote and the GPU broker can reach no key and no HMAC.

Usage: check-symbols.py NM COMMON_LIB HELPER_LIB...

For each helper library (the zygote's, the broker's, the sandbox compiler's they link), follows
every symbol it needs through the libraries given (its own, then the common library, as the
linker would resolve them) and fails if what it reaches defines or needs a symbol of the key or
the handshake (fs_key_*, fs_auth_*) or of OpenSSL's MACs and randomness. The same walk from the
common library's handshake code must find them, or the pattern has gone stale.
"""
import re
import subprocess
import sys

FORBIDDEN = re.compile(r"^(fs_key_|fs_auth_|HMAC|EVP_|CRYPTO_|OPENSSL_|RAND_)")


def objects(nm, lib):
    """member -> (defined symbols, undefined symbols)"""
    out = subprocess.run([nm, "-A", "-P", lib], check=True, capture_output=True, text=True).stdout
    objs = {}
    for line in out.splitlines():
        m = re.match(r"^(.*?): (\S+) (\S)", line)
        if not m:
            continue
        member, name, kind = m.groups()
        d, u = objs.setdefault(member, (set(), set()))
        if kind == "U":
            u.add(name)
        elif kind.isupper() or kind in "vw":
            d.add(name)
    return objs


def reach(start, pool):
    """The objects a link pulls in from pool, starting with start, and the symbols they use."""
    seen = set(start)
    todo = list(start)
    syms = set()
    while todo:
        d, u = pool[todo.pop()]
        syms |= d | u
        for name in u:
            for member, (dd, _) in pool.items():
                if name in dd and member not in seen:
                    seen.add(member)
                    todo.append(member)
    return seen, syms


def main():
    nm, common, helpers = sys.argv[1], sys.argv[2], sys.argv[3:]
    pool = objects(nm, common)
    failed = False
    for lib in helpers:
        objs = objects(nm, lib)
        pool.update(objs)
    for lib in helpers:
        start = [m for m in objects(nm, lib)]
        members, syms = reach(start, pool)
        bad = sorted(s for s in syms if FORBIDDEN.match(s))
        if bad:
            failed = True
            print(f"{lib}: reaches {', '.join(bad[:8])} (through {len(members)} objects)")
        else:
            print(f"ok: {lib}: {len(members)} objects, {len(syms)} symbols, no key or HMAC")
    auth = [m for m in pool if re.search(r"auth\.c\.o\]?$", m)]
    _, syms = reach(auth, pool)
    if not any(FORBIDDEN.match(s) for s in syms):
        failed = True
        print("the handshake code reaches no forbidden symbol: the pattern is stale")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
