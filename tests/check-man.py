#!/usr/bin/env python3
"""The man pages and the --help texts agree: every option, environment variable and exit
status one names, the other names too; and each command's own help ("forkctl run --help")
exits 0, names that command, and names no option the man page lacks.
And the library's page names every function, macro and struct of its header.
Usage: check-man.py [--commands CMD,CMD...] PROGRAM PAGE.scd ... [--api HEADER PAGE.scd]
(--commands: of the PROGRAM that follows it)"""
import re
import subprocess
import sys

OPT = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")
ENV = re.compile(r"\$([A-Z][A-Z_]*[A-Z])")


def words(rx, text):
    return set(rx.findall(text))


def check_commands(prog, commands, man, name):
    failed = 0
    for cmd in commands:
        r = subprocess.run([prog, cmd, "--help"], capture_output=True, text=True)
        if r.returncode != 0 or not r.stdout.startswith("Usage: ") or cmd not in r.stdout:
            print(f"{name}: '{cmd} --help' exits {r.returncode} without its usage text")
            failed += 1
            continue
        for w in sorted(words(OPT, r.stdout) - words(OPT, man)):
            print(f"{name}: option {w} is in '{cmd} --help' but not in the man page")
            failed += 1
    return failed


def check_api(header, page):
    text = open(header, encoding="utf-8").read()
    names = set(re.findall(r"FORKSERVER_EXPORT[^;]*?\b(forkserver_\w+)\s*\(", text, re.S))
    names |= set(re.findall(r"^#define (FORKSERVER_\w+)", text, re.M)) - {
        "FORKSERVER_H", "FORKSERVER_EXPORT"}
    names |= {"struct " + n for n in re.findall(r"^struct (forkserver_\w+) \{", text, re.M)}
    man = open(page, encoding="utf-8").read().replace("\\_", "_").replace("*", "")
    name = page.rsplit("/", 1)[-1]
    missing = sorted(n for n in names if not re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)",
                                                       man))
    for n in missing:
        print(f"{name}: {n} is in {header.rsplit('/', 1)[-1]} but not in the man page")
    return len(missing)


def main(argv):
    failed = 0
    args, commands, pairs = argv[1:], {}, []
    i = 0
    while i < len(args):
        if args[i] == "--api":
            failed += check_api(args[i + 1], args[i + 2])
            i += 3
            continue
        if args[i] == "--commands":
            commands[args[i + 2]] = args[i + 1].split(",")
            i += 2
            continue
        pairs.append((args[i], args[i + 1]))
        i += 2
    for prog, page in pairs:
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
        failed += check_commands(prog, commands.get(prog, []), man, name)
    print("man pages agree with --help" if not failed else f"{failed} disagreements")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
