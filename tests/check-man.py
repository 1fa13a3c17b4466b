#!/usr/bin/env python3
"""The man pages and the --help texts agree: every option, environment variable and exit
status one names, the other names too. Usage: check-man.py PROGRAM PAGE.scd ..."""
import re
import subprocess
import sys

OPT = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
ENV = re.compile(r"\$([A-Z][A-Z_]*[A-Z])")


def words(rx, text):
    return set(rx.findall(text))


def main(argv):
    failed = 0
    for prog, page in zip(argv[1::2], argv[2::2]):
        help_text = subprocess.run([prog, "--help"], check=True, capture_output=True,
                                   text=True).stdout
        help_text = re.sub(r"\b(forkserverd|forkctl) --[a-z-]+", "", help_text)
        man = open(page, encoding="utf-8").read().replace("\\_", "_").replace("*", "")
        # another program's options, named with it ("forkserverd --preload"), are not ours
        man_own = re.sub(r"\b(forkserverd|forkctl) --[a-z-]+", "", man)
        name = page.rsplit("/", 1)[-1]
        for what, rx in (("option", OPT), ("environment variable", ENV)):
            h = words(rx, help_text)
            m = words(rx, man_own) if rx is OPT else {w for w in h if w in man}
            for w in sorted(h - m):
                print(f"{name}: {what} {w} is in --help but not in the man page")
                failed += 1
            if rx is OPT:
                for w in sorted(m - h):
                    print(f"{name}: {what} {w} is in the man page but not in --help")
                    failed += 1
        status = re.search(r"Exit status:(.*)", help_text, re.S)
        codes = set(re.findall(r"\b(\d{1,3})\b", status.group(1))) if status else set()
        section = man.split("# EXIT STATUS", 1)[-1].split("\n# ", 1)[0]
        for c in sorted(codes - set(re.findall(r"\b(\d{1,3})\b", section))):
            print(f"{name}: exit status {c} is in --help but not under EXIT STATUS")
            failed += 1
    print("man pages agree with --help" if not failed else f"{failed} disagreements")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
