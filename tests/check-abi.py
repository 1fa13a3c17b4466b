#!/usr/bin/env python3
"""libforkserver.so exports exactly the functions client/forkserver.h declares with
FORKSERVER_EXPORT, each in a FORKSERVER_* symbol version, and no other shared object we build
exports a common/ helper (fs_*). Usage: check-abi.py HEADER LIBFORKSERVER.so [OTHER.so]..."""
import re
import subprocess
import sys


def dynamic(lib):
    """name -> version of each defined dynamic symbol (version nodes themselves left out)."""
    out = subprocess.run(["objdump", "-T", lib], check=True, capture_output=True,
                         text=True).stdout
    syms = {}
    for line in out.splitlines():
        f = line.split()
        # ADDR FLAGS... SECTION SIZE [VERSION] NAME; undefined ones are in *UND*
        if len(f) < 4 or "*UND*" in f or not re.fullmatch(r"[0-9a-f]{8,}", f[0]):
            continue
        if "*ABS*" in f and f[-1] == f[-2]:
            continue  # the node FORKSERVER_0.1 itself
        syms[f[-1]] = f[-2] if re.fullmatch(r"\(?[A-Z_]+[0-9.]*\)?", f[-2]) else ""
    return syms


def main(argv):
    header, lib, others = argv[1], argv[2], argv[3:]
    text = open(header, encoding="utf-8").read()
    declared = set(re.findall(r"FORKSERVER_EXPORT[^;]*?\b(forkserver_\w+)\s*\(", text, re.S))
    nm = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True,
                        text=True).stdout
    exported = {l.split()[-1].split("@")[0] for l in nm.splitlines()
                if l.split() and l.split()[-2] not in ("A",)}
    failed = 0
    for s in sorted(exported - declared):
        print(f"{lib}: exports {s}, which forkserver.h does not declare")
        failed += 1
    for s in sorted(declared - exported):
        print(f"{lib}: does not export {s}, which forkserver.h declares")
        failed += 1
    for name, version in sorted(dynamic(lib).items()):
        if name in declared and not version.strip("()").startswith("FORKSERVER_"):
            print(f"{lib}: {name} has no FORKSERVER_* symbol version ({version or 'none'})")
            failed += 1
    for other in others:
        nm = subprocess.run(["nm", "-D", "--defined-only", other], check=True,
                            capture_output=True, text=True).stdout
        for l in nm.splitlines():
            if l.split() and l.split()[-1].startswith("fs_"):
                print(f"{other}: exports the internal {l.split()[-1]}")
                failed += 1
    print(f"{len(declared)} functions exported, nothing else" if not failed
          else f"{failed} ABI problems")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
