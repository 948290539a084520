#!/usr/bin/env python3
"""text-order-symbols.py BINARY CALLGRIND_OUT...: the functions of BINARY
that callgrind (run with --demangle=no) saw run, one mangled name per line,
in the order of the files given, each once. Used by scripts/text-order.sh."""
import re, subprocess, sys

binary, outs = sys.argv[1], sys.argv[2:]
defined = set()
for line in subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
seen, order = set(), []
name_re = re.compile(r"^c?fn=\((\d+)\)(?: (.*))?$")
for path in outs:
    names = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = name_re.match(line.rstrip("\n"))
            if not m:
                continue
            fid, name = m.group(1), m.group(2)
            if name is not None:
                names[fid] = name
            name = names.get(fid)
            # callgrind marks a function split by recursion or by ELF object as name'2
            name = name and name.split("'")[0]
            if name and name in defined and name not in seen:
                seen.add(name)
                order.append(name)
print("\n".join(order))
