#!/usr/bin/env python3
"""Lists pairs of sibling source files under src/ that import each other (use crate::… / super::…).

Run from the repository root: python3 scripts/import-cycles.py
A parent module and its own child are not reported (Rust's module tree makes that normal)."""
import os
import re
import sys


def modules(root="src"):
    files = {}
    for base, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(base, name)
                parts = path[len(root) + 1 : -3].split("/")
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                files["::".join(parts)] = path
    return files


def resolve(files, path):
    parts = path.split("::")
    while parts:
        key = "::".join(parts)
        if key in files:
            return key
        parts = parts[:-1]
    return None


def imports(files, module, path):
    text = open(path).read()
    text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
    found = set()
    base = module.split("::") if path.endswith("mod.rs") else module.split("::")[:-1]
    for prefix, rel in (("crate::", []), ("super::", base)):
        for m in re.finditer(re.escape(prefix) + r"((?:\w+::)*)(\{[^}]*\}|\w+)", text):
            heads = m.group(2).strip("{}").split(",")
            for head in heads:
                head = head.strip().split(" ")[0]
                target = resolve(files, "::".join(rel + (m.group(1) + head).split("::")))
                if target and target != module:
                    found.add(target)
    return found


def main():
    files = modules()
    deps = {m: imports(files, m, p) for m, p in files.items()}
    pairs = sorted(
        {tuple(sorted((a, b))) for a, ds in deps.items() for b in ds if a in deps.get(b, ())}
    )
    for a, b in pairs:
        print(f"{a} <-> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
